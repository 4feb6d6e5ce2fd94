# rainbridge container image: `docker build -t rainbridge .` (the Helm chart's default image
# is ghcr.io/rainbridge/rainbridge:<appVersion>). Two stages: the wheel is built in the first,
# the final stage has only Python, the installed wheel and a non-root user (no compilers).
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim
# Extras the chart's features use: every cluster discovery type's client (dns is the chart's
# default discovery: the headless service's name), bedrock/vertex providers' credentials, otel
# traces, socks5 upstream proxies. tests/test_dockerfile.py keeps this list in step with the discovery registry.
ARG EXTRAS=dns,k8s,consul,etcd,mdns,bedrock,vertex,otel,routing,socks
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN set -eux; \
    wheel="$(ls /wheels/rainbridge-*.whl)"; \
    python -m pip install "${wheel}[${EXTRAS}]"; \
    rm -rf /wheels; \
    groupadd --system --gid 10001 rainbridge; \
    useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home rainbridge; \
    mkdir -p /app/data; chown -R 10001:10001 /app
WORKDIR /app
USER 10001:10001
# 8080: HTTP (OpenAI/Anthropic API, /health, /health/ready, /metrics); 7946: gossip, TCP + UDP.
EXPOSE 8080 7946/tcp 7946/udp
VOLUME ["/app/data"]
ENTRYPOINT ["rainbridge"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--app-dir", "/app/data"]
