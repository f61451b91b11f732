# syntax=docker/dockerfile:1
# tokensync operator image: dependencies pinned by constraints.txt (the same file CI uses),
# no build tools in the final stage (no pip, setuptools or wheel, neither in the venv nor
# in the base), a non-root numeric user, read-only root filesystem.
# tests/integration/test_image.py builds and runs it (docs/decisions/0006-image.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt ./
# The dependencies first (pyproject.toml's list, constraints.txt's pins): this layer is
# reused until one of those two files changes, not rebuilt for every code or README edit.
RUN python -m venv /opt/tokensync \
 && python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' >/tmp/requirements.txt \
 && /opt/tokensync/bin/pip install --constraint constraints.txt --requirement /tmp/requirements.txt \
 && /opt/tokensync/bin/python -m compileall -q /opt/tokensync
COPY README.md ./
COPY operator ./operator
# pip and setuptools install the operator; it never runs them: out of the venv they go,
# pip last, by itself. `pip check` in between: the two installs agree, and nothing left
# needs setuptools.
RUN /opt/tokensync/bin/pip install --no-deps --constraint constraints.txt . \
 && /opt/tokensync/bin/pip uninstall --yes --quiet setuptools wheel \
 && /opt/tokensync/bin/pip check \
 && /opt/tokensync/bin/pip uninstall --yes --quiet pip \
 && /opt/tokensync/bin/python -m compileall -q /opt/tokensync

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="tokensync" \
      org.opencontainers.image.description="Keeps SaaS API tokens fresh in Kubernetes Secrets" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tokensync/tokensync"
# The base's own pip, setuptools and wheel (python:3.11 puts all three in /usr/local):
# not importable, not on PATH. They stay in the base's layer, which every image FROM it
# shares, so this hides them rather than shrinking the download.
RUN set -eu; \
    for dir in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))'); do \
      rm -rf "$dir"/pip "$dir"/pip-*.dist-info "$dir"/setuptools "$dir"/setuptools-*.dist-info \
             "$dir"/wheel "$dir"/wheel-*.dist-info "$dir"/pkg_resources "$dir"/_distutils_hack \
             "$dir"/distutils-precedence.pth; \
    done; \
    for dir in $(echo "$PATH" | tr ':' ' '); do \
      rm -f "$dir"/pip "$dir"/pip3 "$dir"/pip3.* "$dir"/wheel "$dir"/easy_install*; \
    done
COPY --from=build /opt/tokensync /opt/tokensync
ENV PATH=/opt/tokensync/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# 65532: the conventional "nonroot" uid; no home, no shell needed, no passwd entry (the
# operator names itself to kopf, which would otherwise ask getpass for a user name).
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["tokensync"]
CMD ["run"]
