# pilot-telemetry: the `pilot` command (collector, API, simulator) without dev tools.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The reports: pango and harfbuzz for WeasyPrint's PDF, and the Korean font (NanumGothic) they are drawn with.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-nanum fontconfig \
    && rm -rf /var/lib/apt/lists/*

# Install the package with the server's dependencies (no dev tools, no agent protocols), then drop the sources.
COPY . /tmp/src
RUN pip install '/tmp/src[server]' && rm -rf /tmp/src

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin pilot \
    && mkdir /var/lib/pilot && chown pilot:pilot /var/lib/pilot
# Mount points of docker-compose.yml's device registry and broker-account volumes (a new volume takes its
# owner from here). Its init service writes them as Mosquitto's uid and gid (1883 in eclipse-mosquitto), so
# that Mosquitto owns the password and ACL files it reads (it warns about others' files; newer versions refuse them).
RUN mkdir -p /etc/pilot /srv/pilot/deploy/mosquitto/auth \
    && chown 1883:1883 /etc/pilot /srv/pilot/deploy/mosquitto/auth
USER pilot
WORKDIR /home/pilot

# 8000: `pilot api`; 9464: the collector's Prometheus /metrics.
EXPOSE 8000 9464
CMD ["pilot", "collect"]
