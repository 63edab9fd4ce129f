#!/usr/bin/env bash
# Installs what moe2onnx needs to build and test, idempotently: Debian packages that are missing,
# and the npm package onnxruntime-node (the real ONNX Runtime, CPU build) for the end-to-end
# tests. Safe to run again; does nothing when everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PKGS=(build-essential pkg-config libprotobuf-c-dev protobuf-c-compiler libonnx-dev libcjson-dev
          clang libclang-rt-14-dev valgrind)
command -v node >/dev/null 2>&1 || DEB_PKGS+=(nodejs)
command -v npm >/dev/null 2>&1 || DEB_PKGS+=(npm)

missing=()
for p in "${DEB_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

want=$(node -p "require('./package.json').dependencies['onnxruntime-node']")
have=$(node -p "try{require('./node_modules/onnxruntime-node/package.json').version}catch(e){''}" 2>/dev/null || true)
if [ "$have" != "$want" ]; then
    echo "setup: installing onnxruntime-node $want (CPU binaries from the package only)"
    # ONNXRUNTIME_NODE_INSTALL=skip: use the CPU binaries inside the package, download nothing else.
    ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error
fi
