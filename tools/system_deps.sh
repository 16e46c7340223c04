#!/bin/sh
# Debian packages that the demo data and the browser test need. Installed when missing and we are
# root with apt-get (CI, Colab, containers); otherwise we say what to install and carry on.
missing=""
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing="$missing fonts-noto-color-emoji"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$missing"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
else
    echo "note: not installed:$missing (sudo apt-get install$missing); tests that need them will say so"
fi
