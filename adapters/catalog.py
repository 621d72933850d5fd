"""Loading device profiles and the device registry from disk."""

from __future__ import annotations

from pathlib import Path

from pilot_core.profiles import DeviceProfile, ProfileCatalog, ProfileErrors, parse_profile
from pilot_core.registry import DeviceRegistry, parse_registry
from pilot_core.yaml_text import SourceError

BUNDLED_PROFILES = Path(__file__).resolve().parent.parent / "device_profiles"


def profile_files(directory: Path) -> list[Path]:
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def load_profiles(directory: Path = BUNDLED_PROFILES) -> ProfileCatalog:
    """Every profile in ``directory``; all problems are reported together."""
    if not directory.is_dir():
        raise ProfileErrors([SourceError(str(directory), None, "profile directory does not exist")])
    profiles: list[DeviceProfile] = []
    errors: list[SourceError] = []
    seen: dict[str, Path] = {}
    for path in profile_files(directory):
        try:
            profile = parse_profile(path.read_text(encoding="utf-8"), str(path))
        except ProfileErrors as exc:
            errors.extend(exc.errors)
            continue
        if profile.id in seen:
            errors.append(
                SourceError(str(path), 1, f"profile id {profile.id!r} is also declared in {seen[profile.id]}")
            )
            continue
        seen[profile.id] = path
        profiles.append(profile)
    if errors:
        raise ProfileErrors(errors)
    return ProfileCatalog(profiles)


def load_registry(path: Path, catalog: ProfileCatalog) -> DeviceRegistry:
    if not path.is_file():
        raise ProfileErrors([SourceError(str(path), None, "device registry file does not exist")])
    return parse_registry(path.read_text(encoding="utf-8"), str(path), catalog)
