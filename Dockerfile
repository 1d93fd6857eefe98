# pilog in a container: a small Debian image, a non-root user, the data dir on a volume.
#
#   buildah bud -t pilog .                           (or: docker build / podman build)
#   docker run -d --name pilog -v /var/lib/pilog:/data \
#       -v "$PWD/pilog.toml:/etc/pilog/pilog.toml:ro" --device /dev/ttyUSB0 pilog
#
# Two stages, both on debian:bookworm-slim (Python 3.11 from apt): the builder has a compiler
# and builds wheels for pilog[spi] and its dependencies (spidev never ships wheels; lmdb and
# msgspec have none on some arches, armv7 among them) and installs them into a venv; the final
# stage holds only python3 and that venv (no compiler, no pip). docs/install.md: running it,
# and the arm64 and armv7 builds.

ARG BASE=debian:bookworm-slim

# -- builder: wheels and the venv --------------------------------------------------------------
FROM ${BASE} AS builder
# libffi-dev and patch are for where lmdb has no wheel (armv7): building its sdist takes cffi,
# compiled from source there too (ffi.h), and patch(1) for its bundled liblmdb.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates gcc libc6-dev libffi-dev patch python3 python3-dev python3-venv \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src

# Dependencies first, from pyproject.toml alone: editing pilog's code does not rebuild them.
# The image is for Pis, where SPI sensors are a main use: it has the spi extra (spidev) too.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["spi"]))' > requirements.txt \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip wheel --wheel-dir /wheels -r requirements.txt

COPY README.md ./
COPY pilog ./pilog
# The C modules must load on the target arch; lmdb's own, not its cffi fallback, which compiles
# on first import (lmdb's py3-none-any wheel) and would fail where there is no compiler.
RUN /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && python3 -m venv /opt/pilog \
    && /opt/pilog/bin/pip install --no-index --find-links /wheels 'pilog[spi]' \
    && /opt/pilog/bin/pip uninstall -y pip setuptools \
    && /opt/pilog/bin/pilog --version \
    && /opt/pilog/bin/python -c 'import lmdb.cpython, msgspec, spidev'

# -- final: python3 and the venv, no compiler, no pip ------------------------------------------
FROM ${BASE}
# dialout (GID 20 on Debian and Raspberry Pi OS) owns the serial ports; i2c, spi and gpio have
# host-specific GIDs: pass them with --group-add.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 pilog \
    && useradd --uid 10001 --gid pilog --groups dialout --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin pilog \
    && mkdir -p /data /etc/pilog \
    && chown pilog:pilog /data \
    && chmod 0750 /data
COPY --from=builder /opt/pilog /opt/pilog

ENV PATH=/opt/pilog/bin:$PATH \
    PILOG_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
# Config: /etc/pilog/pilog.toml when mounted (read-only is enough), else the embedded default
# (virtual sensors). Its data_dir is overridden by PILOG_DATA_DIR.
VOLUME ["/data"]
WORKDIR /
USER pilog

# Healthy while `pilog run` answers on its control socket and its log writer has no I/O error.
# (Kept by Docker-format images: `buildah bud --format docker`; OCI images drop HEALTHCHECK.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, sys; from pathlib import Path; from pilog.control import StatusRequest, query; from pilog.runstate import RunSnapshot; a = query(Path(os.environ.get('PILOG_DATA_DIR', '/data')), StatusRequest(), RunSnapshot); sys.exit(0 if isinstance(a, RunSnapshot) and not a.writer.io_error else 1)"]

# pilog flushes, fsyncs and exits 0 on SIGTERM (docker stop) within 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pilog"]
CMD ["run"]
