#!/bin/sh
# make-deb.sh — builds the Debian packages of idemgate with dpkg-deb:
#
#   libnginx-mod-http-idempotency_VERSION_ARCH.deb
#       the module in the distribution's nginx module directory, its load
#       snippet in modules-available, enabled by a link in modules-enabled
#       (as Debian's libnginx-mod-* packages do); depends on the exact nginx
#       ABI it was built against (nginx-abi-X, which the nginx package
#       provides)
#   idemgate_VERSION_ARCH.deb
#       the gateway, its man page, /etc/idemgate.conf (a conffile), the
#       systemd unit, the example nginx snippet and Grafana dashboard;
#       depends on the module package of the same version
#
# Usage: make-deb.sh STAGE OUTDIR VERSION (called by `make deb`, which has
# installed everything into STAGE with PREFIX=/usr first).
set -eu

stage=$1
out=$2
version=$3
here=$(cd "$(dirname "$0")/.." && pwd)
arch=$(dpkg --print-architecture)
abi=$(dpkg-query -W -f='${Provides}' nginx | tr ',' '\n' | tr -d ' ' |
      grep '^nginx-abi-' || true)
if [ -z "$abi" ]; then
    echo "make-deb.sh: the nginx package provides no nginx-abi-*" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# shared-library dependencies, as dpkg-shlibdeps finds them
shlibs() {
    mkdir -p "$work/shl/debian"
    printf 'Source: idemgate\n\nPackage: idemgate\nArchitecture: any\n' \
        >"$work/shl/debian/control"
    (cd "$work/shl" && dpkg-shlibdeps -O "$@" 2>/dev/null) |
        sed -n 's/^shlibs:Depends=//p'
}

# $1: the package's tree; moves the listed paths of the stage into it
take() {
    dest=$1
    shift
    for p in "$@"; do
        mkdir -p "$dest$(dirname "$p")"
        mv "$stage$p" "$dest$p"
    done
}

package() {
    tree=$1
    name=$2
    find "$tree" -type d -exec chmod 755 {} +
    (cd "$tree" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' |
        xargs -0 md5sum >DEBIAN/md5sums)
    size=$(du -sk --exclude=DEBIAN "$tree" | cut -f1)
    sed -i "s/^Installed-Size: .*/Installed-Size: $size/" "$tree/DEBIAN/control"
    mkdir -p "$out"
    dpkg-deb --root-owner-group --build "$tree" \
        "$out/${name}_${version}_${arch}.deb" >/dev/null
    echo "$out/${name}_${version}_${arch}.deb"
}

# the module
mod=$work/mod
take "$mod" /usr/lib/nginx/modules/ngx_http_idempotency_module.so \
    /usr/share/nginx/modules-available/mod-http-idempotency.conf
rm -f "$stage/etc/nginx/modules-enabled/50-mod-http-idempotency.conf"
mkdir -p "$mod/DEBIAN"
cat >"$mod/DEBIAN/control" <<CONTROL
Package: libnginx-mod-http-idempotency
Version: $version
Architecture: $arch
Maintainer: idemgate <idemgate@localhost>
Installed-Size: 0
Depends: $abi, $(shlibs -e "$mod/usr/lib/nginx/modules/ngx_http_idempotency_module.so")
Section: httpd
Priority: optional
Description: Idempotency keys for nginx: Stripe-style Idempotency-Key
 The first response of a key is stored durably (LMDB) and replayed to every
 retry with the same parameters; a reuse with other parameters is refused,
 concurrent duplicates never both reach the upstream. Directives:
 idempotency, idempotency_store, idempotency_methods, ...
CONTROL
install -m 755 "$here/packaging/debian/mod-postinst" "$mod/DEBIAN/postinst"
install -m 755 "$here/packaging/debian/mod-postrm" "$mod/DEBIAN/postrm"
package "$mod" libnginx-mod-http-idempotency

# the gateway
gw=$work/gw
take "$gw" /usr/bin/idemgate /usr/share/man/man1/idemgate.1 \
    /lib/systemd/system/idemgate.service /etc/idemgate.conf \
    /usr/share/doc/idemgate
gzip -9n "$gw/usr/share/man/man1/idemgate.1"
mkdir -p "$gw/DEBIAN"
echo /etc/idemgate.conf >"$gw/DEBIAN/conffiles"
cat >"$gw/DEBIAN/control" <<CONTROL
Package: idemgate
Version: $version
Architecture: $arch
Maintainer: idemgate <idemgate@localhost>
Installed-Size: 0
Depends: libnginx-mod-http-idempotency (= $version), nginx, ca-certificates, $(shlibs -e "$gw/usr/bin/idemgate")
Section: httpd
Priority: optional
Description: Idempotency keys in front of any HTTP API
 idemgate writes an nginx configuration from its flags and runs the
 distribution's nginx with the idempotency module: TLS and HTTP/2 for
 clients, http or verified https upstreams, several upstream servers.
 A systemd unit (idemgate.service) runs it from /etc/idemgate.conf.
CONTROL
install -m 755 "$here/packaging/debian/gw-postinst" "$gw/DEBIAN/postinst"
install -m 755 "$here/packaging/debian/gw-prerm" "$gw/DEBIAN/prerm"
install -m 755 "$here/packaging/debian/gw-postrm" "$gw/DEBIAN/postrm"
package "$gw" idemgate
