"""The console's own words in Korean and English, and dates as each language writes them.

The KPI names, units, verdicts and number formats are the report's (``reports.i18n.Words``), so the console and
the report read the same; only what the report has no word for (navigation, sign-in, forms) is here.
"""

from __future__ import annotations

import datetime as dt

from reports.i18n import Language, Words

EN: dict[str, str] = {
    "console": "pilot-telemetry console",
    "skip": "Skip to content",
    "nav": "Main",
    "nav_demonstrations": "Demonstrations",
    "language": "Language",
    "switch_to": "한국어",
    "switch_to_label": "Switch to Korean",
    "signed_in_as": "Signed in as {name} ({role}, {organisation})",
    "sign_in": "Sign in",
    "sign_in_title": "Sign in with an API key",
    "sign_in_help": "Paste a key made with `pilot keys create` (it starts with pt_). It is checked once and"
    " exchanged for a session that ends after 30 minutes without use or 8 hours after sign-in.",
    "api_key": "API key",
    "sign_in_refused": "That key is not valid: unknown, revoked or mistyped.",
    "sign_in_throttled": "Too many attempts from this address: wait {seconds} seconds and try again.",
    "sign_out": "Sign out",
    "signed_out": "You are signed out.",
    "expired": "Your session has ended: sign in again.",
    "csrf_refused": "This form is out of date (or did not come from this console): open the page again and retry.",
    "demonstrations": "Demonstrations",
    "no_demonstrations": "No demonstration that this key can see.",
    "name": "Name",
    "status": "Status",
    "windows": "Windows",
    "verdicts": "Verdicts",
    "draft": "Draft",
    "frozen": "Frozen",
    "version_n": "version {version}",
    "unavailable": "KPIs unavailable: {reason}",
    "not_evaluated": "not evaluated",
    "plan": "Plan",
    "plan_hash": "Plan hash",
    "organisation": "Owner",
    "participants": "Participants",
    "before_after": "Before and after",
    "charts": "Charts",
    "coverage": "Data coverage",
    "gap": "gap",
    "gaps_note": "Rows marked as a gap are missing telemetry, messages or states in planned busy time.",
    "audit": "Audit trail",
    "downloads": "Downloads",
    "report_pdf_ko": "Report, PDF, Korean",
    "report_pdf_en": "Report, PDF, English",
    "comparison_csv": "Before/after comparison, CSV",
    "kpis_csv": "KPIs per window, CSV",
    "evidence": "Signed evidence bundle (ZIP)",
    "evidence_note": "The bundle reads every hour again from InfluxDB: it takes a while.",
    "when": "When",
    "who": "Who",
    "what": "What",
    "why": "Why",
    "freeze": "Freeze the plan",
    "freeze_title": "Freeze this plan?",
    "freeze_explain": "Freezing fixes the plan below under its hash before the pilot runs. It cannot be"
    " undone: afterwards the plan changes only by amendments, each a new version with its reason.",
    "freeze_confirm": "Freeze the plan with this hash",
    "cancel": "Cancel",
    "frozen_done": "The plan is frozen under the hash {hash}.",
    "freeze_changed": "The plan changed since this page was opened: check its new hash and confirm again.",
    "freeze_not_allowed": "Your role may not freeze this plan.",
    "already_frozen": "This plan is already frozen.",
    "amendments": "Amendments",
    "amendments_title": "Plan versions and amendments",
    "version": "Version",
    "reason": "Reason",
    "changes": "Changes",
    "first_version": "first version",
    "no_amendments": "The plan has not been amended.",
    "not_found": "Not found",
    "not_found_text": "There is no such page, or it is not one this key may see.",
    "error": "Something went wrong",
    "back": "Back to the demonstrations",
    "phase_windows": "{phase}: {start} – {end}",
    "met_count": "{count} met",
    "not_met_count": "{count} not met",
    "inconclusive_count": "{count} inconclusive",
    "no_targets": "no targets",
    "preview": "Draft plan: these results are a preview until the plan is frozen.",
}

KO: dict[str, str] = {
    "console": "pilot-telemetry 콘솔",
    "skip": "본문으로 건너뛰기",
    "nav": "주 메뉴",
    "nav_demonstrations": "실증 목록",
    "language": "언어",
    "switch_to": "English",
    "switch_to_label": "영어로 보기",
    "signed_in_as": "{name} ({role}, {organisation}) 로그인 중",
    "sign_in": "로그인",
    "sign_in_title": "API 키로 로그인",
    "sign_in_help": "`pilot keys create`로 만든 키(pt_로 시작)를 붙여 넣으세요. 키는 한 번 확인된 뒤 세션으로"
    " 바뀌며, 세션은 30분 동안 쓰지 않거나 로그인 후 8시간이 지나면 끝납니다.",
    "api_key": "API 키",
    "sign_in_refused": "유효하지 않은 키입니다: 알 수 없거나, 폐기되었거나, 잘못 입력되었습니다.",
    "sign_in_throttled": "이 주소에서 시도가 너무 많습니다: {seconds}초 후에 다시 시도하세요.",
    "sign_out": "로그아웃",
    "signed_out": "로그아웃되었습니다.",
    "expired": "세션이 끝났습니다: 다시 로그인하세요.",
    "csrf_refused": "이 양식은 만료되었거나 이 콘솔에서 온 것이 아닙니다: 페이지를 다시 열고 다시 시도하세요.",
    "demonstrations": "실증 목록",
    "no_demonstrations": "이 키로 볼 수 있는 실증이 없습니다.",
    "name": "이름",
    "status": "상태",
    "windows": "기간",
    "verdicts": "판정",
    "draft": "초안",
    "frozen": "동결됨",
    "version_n": "버전 {version}",
    "unavailable": "KPI를 계산할 수 없습니다: {reason}",
    "not_evaluated": "평가되지 않음",
    "plan": "계획",
    "plan_hash": "계획 해시",
    "organisation": "소유 기관",
    "participants": "참여 기관",
    "before_after": "실증 전후 비교",
    "charts": "차트",
    "coverage": "데이터 수집률",
    "gap": "결측",
    "gaps_note": "결측으로 표시된 행은 계획 가동 시간 중 텔레메트리, 메시지 또는 상태가 빠져 있습니다.",
    "audit": "감사 기록",
    "downloads": "내려받기",
    "report_pdf_ko": "보고서 PDF (한국어)",
    "report_pdf_en": "보고서 PDF (영어)",
    "comparison_csv": "전후 비교 CSV",
    "kpis_csv": "기간별 KPI CSV",
    "evidence": "서명된 증거 묶음 (ZIP)",
    "evidence_note": "증거 묶음은 InfluxDB에서 모든 시간을 다시 읽으므로 시간이 걸립니다.",
    "when": "일시",
    "who": "누가",
    "what": "무엇을",
    "why": "사유",
    "freeze": "계획 동결",
    "freeze_title": "이 계획을 동결하시겠습니까?",
    "freeze_explain": "동결하면 파일럿 전에 아래 계획이 해시와 함께 고정됩니다. 되돌릴 수 없으며, 이후 계획은"
    " 사유가 기록된 새 버전(변경)으로만 바뀝니다.",
    "freeze_confirm": "이 해시로 계획 동결",
    "cancel": "취소",
    "frozen_done": "계획이 해시 {hash}로 동결되었습니다.",
    "freeze_changed": "이 페이지를 연 뒤 계획이 바뀌었습니다: 새 해시를 확인하고 다시 확인하세요.",
    "freeze_not_allowed": "이 역할로는 이 계획을 동결할 수 없습니다.",
    "already_frozen": "이 계획은 이미 동결되었습니다.",
    "amendments": "변경 이력",
    "amendments_title": "계획 버전과 변경 이력",
    "version": "버전",
    "reason": "사유",
    "changes": "바뀐 값",
    "first_version": "첫 버전",
    "no_amendments": "계획이 변경된 적이 없습니다.",
    "not_found": "찾을 수 없음",
    "not_found_text": "그런 페이지가 없거나, 이 키로 볼 수 없는 페이지입니다.",
    "error": "문제가 발생했습니다",
    "back": "실증 목록으로",
    "phase_windows": "{phase}: {start} – {end}",
    "met_count": "달성 {count}",
    "not_met_count": "미달성 {count}",
    "inconclusive_count": "판단 보류 {count}",
    "no_targets": "목표 없음",
    "preview": "초안 계획: 계획이 동결될 때까지 이 결과는 미리보기입니다.",
}
TEXT = {Language.EN: EN, Language.KO: KO}
ROLES = {
    Language.EN: {
        "startup": "startup",
        "factory_manager": "factory manager",
        "evaluator": "evaluator",
        "admin": "admin",
    },
    Language.KO: {"startup": "스타트업", "factory_manager": "공장 관리자", "evaluator": "평가자", "admin": "관리자"},
}
_EN_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class ConsoleWords(Words):
    """The report's words, the console's own, and dates as the reader's language writes them."""

    def __init__(self, language: Language) -> None:
        super().__init__(language)
        self.console = TEXT[language]

    def __getitem__(self, key: str) -> str:
        return self.console[key] if key in self.console else self.text[key]

    def format(self, key: str, **values: object) -> str:
        return self[key].format(**values)

    def role(self, role: str) -> str:
        return ROLES[self.language].get(role, role)

    def date(self, moment: dt.datetime | dt.date) -> str:
        """6 Dec 2026 in English, 2026. 12. 6. in Korean."""
        if self.language is Language.KO:
            return f"{moment.year}. {moment.month}. {moment.day}."
        return f"{moment.day} {_EN_MONTHS[moment.month - 1]} {moment.year}"

    def moment(self, moment: dt.datetime, zone: dt.tzinfo) -> str:
        """A time in ``zone``: 6 Dec 2026, 14:05 in English, 2026. 12. 6. 14:05 in Korean."""
        local = moment.astimezone(zone)
        separator = " " if self.language is Language.KO else ", "
        return f"{self.date(local)}{separator}{local:%H:%M}"

    def integer(self, value: int) -> str:
        return f"{value:,}"
