# syntax=docker/dockerfile:1
# tokensync operator image: dependencies pinned by constraints.txt (the same file CI uses),
# no build tools in the final stage, a non-root numeric user, read-only root filesystem.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY operator ./operator
RUN python -m venv /opt/tokensync \
 && /opt/tokensync/bin/pip install --constraint constraints.txt . \
 && /opt/tokensync/bin/python -m compileall -q /opt/tokensync

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tokensync" \
      org.opencontainers.image.description="Keeps SaaS API tokens fresh in Kubernetes Secrets" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tokensync/tokensync"
COPY --from=build /opt/tokensync /opt/tokensync
ENV PATH=/opt/tokensync/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the conventional "nonroot" uid; no home, no shell needed.
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["tokensync"]
CMD ["run"]
