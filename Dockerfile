# syntax=docker/dockerfile:1
# authz: Envoy ext_authz (gRPC, plus the optional HTTP front door) for Ant Media Server.
#   docker build -t authz:0.1.0 .
#   docker run --rm -p 9001:9001 -p 9464:9464 -e AUTHZ_HS256_SECRET=... authz:0.1.0
# Kubernetes manifests: deploy/kubernetes (deploy/README.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: a virtualenv with authz and its dependencies (binary wheels; no compiler is
# needed, and none reaches the final image either way).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/authz
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authz ./authz
# Bytecode is compiled here because the final image runs on a read-only root filesystem.
RUN /opt/authz/bin/pip install . \
 && /opt/authz/bin/pip uninstall --yes pip setuptools wheel \
 && /opt/authz/bin/python -m compileall -q /opt/authz/lib

# Final stage: the interpreter, the virtualenv, an unprivileged user. Nothing else.
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 authz \
 && useradd --system --uid 10001 --gid authz --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin authz
COPY --from=build /opt/authz /opt/authz
ENV PATH=/opt/authz/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AUTHZ_GRPC_ADDRESS=0.0.0.0:9001 \
    AUTHZ_HTTP_ADDRESS=0.0.0.0:9464
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# 9001: ext_authz gRPC (and grpc.health.v1); 9464: /metrics, /healthz, /readyz;
# 9002: the HTTP ext_authz front door, only when AUTHZ_HTTP_AUTHZ_ADDRESS is set.
EXPOSE 9001 9464 9002
# No HEALTHCHECK: Kubernetes ignores it and runs the probes in deploy/kubernetes instead, and
# a baked-in probe would hit the wrong port whenever AUTHZ_HTTP_ADDRESS is changed.
ENTRYPOINT ["authz"]
CMD ["serve"]
