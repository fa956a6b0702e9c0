#!/usr/bin/env bash
# Fetches what `svm qemu` needs into a cache under target/ (nothing is
# installed system-wide): qemu-system-x86_64 with its firmware (SeaBIOS and
# the option ROMs for -kernel boots), the shared libraries it needs that this
# machine lacks, and a stock Debian kernel. Debian packages only, fetched with
# `apt-get download` and unpacked with `dpkg -x`.
#
# Idempotent: a finished cache is left alone; downloaded packages are reused.
# Download here: 40 MB (the cloud kernel 26 MB, qemu-system-x86 9 MB, the TCG
# module's package 2 MB, firmware 1.5 MB, libraries 1.3 MB); a machine with
# fewer of qemu's libraries installed fetches a few MB more.
#
# Usage: scripts/fetch-qemu.sh [CACHE_DIR]   (default: target/qemu)
# Environment: SVM_KERNEL_FLAVOUR (default cloud-amd64: a kernel built for
# virtual machines, a third of the size of the generic amd64 one; both have
# userfaultfd, memfd, devtmpfs and the 8250 serial console built in).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-$root/target/qemu}
flavour=${SVM_KERNEL_FLAVOUR:-cloud-amd64}
debs=$cache/debs
tree=$cache/root
stamp=$cache/ready

if [[ -f $stamp && -x $cache/qemu-system-x86_64 && -f $cache/vmlinuz ]]; then
    echo "fetch-qemu: $cache is ready ($(cat "$stamp"))"
    exit 0
fi
mkdir -p "$debs" "$tree"

# Packages whose dependencies are not followed: qemu-system-common is taken
# for its TCG module alone (its dependencies are spice, GL, audio, USB);
# ipxe-qemu holds network boot ROMs, and the guest has no network card.
skip_re='^(qemu-system-common|ipxe-qemu|libc6|libgcc-s1|debconf|adduser|dpkg)$'

apt_ready() { apt-cache show "$1" >/dev/null 2>&1; }
if ! apt_ready qemu-system-x86 || ! apt_ready "linux-image-$flavour"; then
    echo "fetch-qemu: package lists lack qemu or the kernel; running apt-get update"
    apt-get update -qq
fi

installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

# Plain `Depends:` of a package (the first of alternatives), no virtual ones.
depends_of() {
    apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "$1" 2>/dev/null |
        sed -n 's/^  Depends: \([^<].*\)$/\1/p' | sed 's/:any$//'
}

# qemu, its TCG module and its firmware always (unpacked privately), then
# every library in qemu's Depends closure that this machine lacks.
wanted=(qemu-system-x86 qemu-system-common qemu-system-data seabios)
declare -A seen=()
queue=(qemu-system-x86)
while ((${#queue[@]})); do
    pkg=${queue[0]}
    queue=("${queue[@]:1}")
    for dep in $(depends_of "$pkg"); do
        [[ -n ${seen[$dep]:-} || $dep =~ $skip_re ]] && continue
        seen[$dep]=1
        if [[ $dep != qemu-system-data && $dep != seabios ]] && ! installed "$dep"; then
            wanted+=("$dep")
            queue+=("$dep")
        fi
    done
done

# The flavour's metapackage names the current versioned image package.
image=$(depends_of "linux-image-$flavour" | grep '^linux-image-' | head -n1)
if [[ -z $image ]]; then
    echo "fetch-qemu: no kernel image package behind linux-image-$flavour" >&2
    exit 1
fi
wanted+=("$image")

echo "fetch-qemu: packages: ${wanted[*]}"
(
    cd "$debs"
    for pkg in "${wanted[@]}"; do
        if ! compgen -G "${pkg}_*.deb" >/dev/null; then
            apt-get download -qq -o APT::Sandbox::User=root "$pkg"
        fi
    done
)

for pkg in "${wanted[@]}"; do
    deb=$(compgen -G "$debs/${pkg}_*.deb" | head -n1)
    if [[ $pkg == "$image" ]]; then
        # Only /boot: the modules (80 MB unpacked) are not needed, the
        # guest uses what is built in.
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tree" --wildcards './boot/vmlinuz-*'
    else
        dpkg -x "$deb" "$tree"
    fi
done

kernel=$(compgen -G "$tree/boot/vmlinuz-*" | head -n1)
ln -sfn "${kernel#"$cache"/}" "$cache/vmlinuz"

# Firmware: qemu-system-data links some ROMs to absolute /usr/share/seabios
# paths that do not exist here; -L search paths find them in the tree instead.
cat >"$cache/qemu-system-x86_64" <<'EOF'
#!/bin/sh
# qemu-system-x86_64 from the private tree beside this script (scripts/fetch-qemu.sh).
t=$(cd "$(dirname "$0")" && pwd)/root
libs=$t/usr/lib/x86_64-linux-gnu:$t/lib/x86_64-linux-gnu
LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    exec "$t/usr/bin/qemu-system-x86_64" -L "$t/usr/share/qemu" -L "$t/usr/share/seabios" "$@"
EOF
chmod +x "$cache/qemu-system-x86_64"

if ! version=$("$cache/qemu-system-x86_64" --version | head -n1); then
    echo "fetch-qemu: qemu does not start; missing libraries:" >&2
    LD_LIBRARY_PATH=$tree/usr/lib/x86_64-linux-gnu:$tree/lib/x86_64-linux-gnu \
        ldd "$tree/usr/bin/qemu-system-x86_64" | grep 'not found' >&2 || true
    exit 1
fi
size=$(du -cb "$debs"/*.deb | tail -n1 | cut -f1)
echo "$version; kernel $(basename "$kernel"); $((size / 1000000)) MB downloaded" >"$stamp"
echo "fetch-qemu: ready in $cache: $(cat "$stamp")"
