# provisioner: the control plane (API, Slack endpoint, workers, scheduler) in one process.
# Nodes run libvirtd themselves; this image only needs libvirt's client library.
FROM python:3.11-slim-bookworm AS build
# Unpinned on purpose: bookworm's point releases carry the security fixes we want.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc pkg-config libvirt-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY provisioner ./provisioner
COPY api ./api
COPY acl ./acl
COPY bot ./bot
RUN python -m venv /opt/provisioner \
 && /opt/provisioner/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/provisioner provisioner
COPY --from=build /opt/provisioner /opt/provisioner
USER 10001
WORKDIR /var/lib/provisioner
ENV PATH=/opt/provisioner/bin:$PATH \
    PROVISIONER_HOST=0.0.0.0 \
    PROVISIONER_DATA_DIR=/var/lib/provisioner/data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["provisioner"]
CMD ["serve"]
