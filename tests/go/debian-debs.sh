# Sourced by tests/go/debian-*.sh: Debian 12 packages unpacked into a fixture
# tree (the userland of a test kit image), renamed into place only when whole.

# debs_unpack OUT PKG...: downloads the packages (updating apt's lists once
# if they are stale) into OUT.tmp/debs, unpacks them into OUT.tmp/root and
# drops their docs, man pages and translations.
debs_unpack() {
    local out="$1"
    shift
    rm -rf "$out.tmp"
    mkdir -p "$out.tmp/debs" "$out.tmp/root"
    (cd "$out.tmp/debs" && apt-get download -qq -o APT::Sandbox::User=root "$@") || {
        apt-get update -qq
        (cd "$out.tmp/debs" && apt-get download -qq -o APT::Sandbox::User=root "$@")
    }
    for d in "$out.tmp"/debs/*.deb; do dpkg-deb -x "$d" "$out.tmp/root"; done
    rm -rf "$out.tmp/root/usr/share/doc" "$out.tmp/root/usr/share/man" \
        "$out.tmp/root/usr/share/locale" "$out.tmp/root/usr/share/lintian"
}

# debs_done OUT: keeps the package list, marks the tree done and renames it
# into place last, so a setup cut short never leaves a tree that looks whole.
debs_done() {
    local out="$1"
    ls "$out.tmp/debs" > "$out.tmp/packages.txt"
    rm -rf "$out.tmp/debs"
    touch "$out.tmp/.done"
    rm -rf "$out"
    mv "$out.tmp" "$out"
}
