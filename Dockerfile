# failover-proxy: the sidecar's image. Build it from the repository's root:
#
#   docker build -t failover-proxy:0.1.0 .
#   docker run --rm -p 8080:8080 -v failover-state:/var/lib/failover-proxy failover-proxy:0.1.0
#
# With your own config (it must listen on 0.0.0.0 and keep cache.path and buffer.path
# under /var/lib/failover-proxy, the only place the proxy's user may write):
#
#   docker run --rm -p 8080:8080 -v "$PWD/my-config:/etc/failover-proxy:ro" \
#     -v failover-state:/var/lib/failover-proxy failover-proxy:0.1.0
#
# Stop it with `docker stop -t 40`: on SIGTERM the proxy stops accepting, lets requests
# in flight finish for up to shutdown_grace (15s in the built-in config; aiohttp may wait
# twice that) and exits 0. Docker's default of 10s would cut the drain short.

# The same Python minor and Debian release as CI (.ci/run), so the image runs what the
# tests ran on. For reproducible builds, pin the digest too: python:3.11-slim-bookworm@sha256:...
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src

# 1. Dependencies, in their own layer: it is rebuilt only when pyproject.toml changes,
#    not on every change to the proxy's code. The list is read from pyproject.toml, so
#    the image installs exactly what `pip install .` would.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 2. The proxy itself (pyproject.toml names README.md as the package's readme).
COPY README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf /src/build /src/*.egg-info

# 3. A user of its own (numeric, so Kubernetes' runAsNonRoot can check it), and the one
#    directory it may write: the cache file and the write buffer's journal.
RUN groupadd --system --gid 10001 failover \
    && useradd --system --uid 10001 --gid failover --no-create-home \
        --home-dir /var/lib/failover-proxy --shell /usr/sbin/nologin failover \
    && mkdir -p /etc/failover-proxy /var/lib/failover-proxy \
    && chown failover:failover /var/lib/failover-proxy \
    && chmod 0750 /var/lib/failover-proxy

# 4. The built-in config: the one k8s/configmap.yaml mounts in Kubernetes (one source
#    for both), written out key by key and checked now, so a broken one fails the build.
#    Mount your own over /etc/failover-proxy (a directory, so hot reload sees changes) or
#    pass another path: `docker run ... failover-proxy:0.1.0 run --config /path/config.yaml`.
COPY k8s/configmap.yaml /tmp/configmap.yaml
RUN python -c "import pathlib, yaml; data = yaml.safe_load(open('/tmp/configmap.yaml'))['data']; [pathlib.Path('/etc/failover-proxy', name).write_text(text) for name, text in data.items()]" \
    && failover-proxy check /etc/failover-proxy/config.yaml \
    && rm /tmp/configmap.yaml

USER 10001:10001
WORKDIR /var/lib/failover-proxy

# The main listener: proxied traffic, and the probes under /_failover. The admin listener
# (9901) stays on the container's loopback: reach it with `docker exec` or port-forward.
EXPOSE 8080

# Liveness (200 while the event loop answers); slim has no curl. The opener ignores
# HTTP(S)_PROXY so a proxy set for the container cannot answer for it. Another port or
# reserved_prefix: set FAILOVER_LIVEZ_URL. Kubernetes ignores HEALTHCHECK: see k8s/.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(os.environ.get('FAILOVER_LIVEZ_URL', 'http://127.0.0.1:8080/_failover/livez'), timeout=2)"]

# The proxy drains on SIGTERM (and SIGINT). It runs as PID 1 and handles both itself; it
# starts no child processes, so there are no zombies to reap and no init is needed.
STOPSIGNAL SIGTERM

ENTRYPOINT ["failover-proxy"]
CMD ["run", "--config", "/etc/failover-proxy/config.yaml"]
