#!/bin/sh
# Debian packages that the demo data and the browser test need. Installed when missing and we are
# root with apt-get (CI, Colab, containers); otherwise we say what to install and carry on.
missing=""
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing="$missing fonts-noto-color-emoji"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$missing"
    apt-get update -qq >/dev/null
    for p in $missing; do  # one at a time: a package this apt lacks (Ubuntu's chromium is a snap) blocks no other
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null ||
            echo "note: could not install $p; tests that need it will say so"
    done
else
    echo "note: not installed:$missing (sudo apt-get install$missing); tests that need them will say so"
fi
exit 0
