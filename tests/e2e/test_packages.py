"""Installing idemgate the way Debian's nginx modules are installed.

`make install` into a DESTDIR: the gateway, the module in the
distribution's module directory with its mod-http-idempotency.conf load
snippet (enabled by a link in modules-enabled), the man page, the example
nginx snippet and the systemd unit. `make deb`: the two packages, which the
last test installs on this machine (as root), loads into the packaged nginx
(`nginx -t`), runs (`idemgate --help`, the unit through
`systemd-analyze verify`) and removes again.

The packages are built from build/ (no failpoints, no sanitizer), which
`make test` has built first.
"""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

from test_gateway_cli import NGINX, ROOT

IS_ROOT = os.getuid() == 0
PACKAGES = ["idemgate", "libnginx-mod-http-idempotency"]

# what is installed is built from build/ whatever the pass, so the
# sanitizer pass of `make test` would only do the same again
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("IDEM_SANITIZER")),
    reason="the packages are built without a sanitizer; the plain pass "
           "installs and tests them")


def make(*args, timeout=900):
    env = {k: v for k, v in os.environ.items()
           if k not in ("SANITIZER", "FAILPOINTS", "MAKEFLAGS", "MFLAGS")}
    r = subprocess.run(["make", "--no-print-directory", "-C", ROOT] + list(args),
                       capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="idemgate-pkg-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_make_install_lays_files_out_like_a_debian_module(tmp):
    dest = os.path.join(tmp, "root")
    make("install", "DESTDIR=" + dest, "PREFIX=/usr/local")
    files = {os.path.relpath(os.path.join(d, f), dest)
             for d, _, fs in os.walk(dest) for f in fs}
    assert files >= {
        "usr/local/bin/idemgate",
        "usr/lib/nginx/modules/ngx_http_idempotency_module.so",
        "usr/share/nginx/modules-available/mod-http-idempotency.conf",
        "etc/nginx/modules-enabled/50-mod-http-idempotency.conf",
        "usr/local/share/man/man1/idemgate.1",
        "usr/local/share/doc/idemgate/examples/nginx-idempotency.conf",
        "usr/local/share/doc/idemgate/examples/grafana-dashboard.json",
        "usr/local/share/doc/idemgate/ngx_http_idempotency_module.md",
        "lib/systemd/system/idemgate.service",
        "etc/idemgate.conf"}, sorted(files)
    link = os.path.join(dest, "etc/nginx/modules-enabled/50-mod-http-idempotency.conf")
    assert os.readlink(link) == \
        "/usr/share/nginx/modules-available/mod-http-idempotency.conf"
    with open(os.path.join(
            dest, "usr/share/nginx/modules-available/mod-http-idempotency.conf")) as f:
        assert f.read().strip() == \
            "load_module modules/ngx_http_idempotency_module.so;"
    assert os.access(os.path.join(dest, "usr/local/bin/idemgate"), os.X_OK)
    with open(os.path.join(dest, "lib/systemd/system/idemgate.service")) as f:
        unit = f.read()
    # the unit runs the binary where PREFIX put it
    assert "ExecStart=/usr/local/bin/idemgate --config /etc/idemgate.conf" in unit
    for line in ["DynamicUser=yes", "StateDirectory=idemgate",
                 "RuntimeDirectory=idemgate", "NoNewPrivileges=yes"]:
        assert line in unit.splitlines(), line

    # an operator's /etc/idemgate.conf is never replaced
    conf = os.path.join(dest, "etc/idemgate.conf")
    with open(conf, "w") as f:
        f.write("listen = 127.0.0.1:1\n")
    make("install", "DESTDIR=" + dest, "PREFIX=/usr/local")
    with open(conf) as f:
        assert f.read() == "listen = 127.0.0.1:1\n"


def test_shipped_config_and_nginx_snippet_are_valid(tmp):
    """The /etc/idemgate.conf the packages ship, and the example snippet,
    are accepted by idemgate and nginx."""
    build = os.path.join(ROOT, "build")
    idemgate = os.path.join(build, "idemgate")
    r = subprocess.run([idemgate, "--config",
                        os.path.join(ROOT, "packaging", "idemgate.conf"),
                        "--print-config"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 0, r.stderr
    assert 'idempotency_store "lmdb:/var/lib/idemgate/data";' in r.stdout
    with open(os.path.join(ROOT, "packaging", "nginx-idempotency.conf")) as f:
        snippet = f.read()
    snippet = snippet.replace("/var/lib/nginx/idempotency",
                              os.path.join(tmp, "store"))
    snippet = snippet.replace("/var/log/nginx/api.log", os.path.join(tmp, "api.log"))
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write("load_module %s/ngx_http_idempotency_module.so;\n"
                "pid %s/nginx.pid;\nerror_log stderr;\n"
                "events {}\nhttp {\n%s\n}\n" % (build, tmp, snippet))
    t = subprocess.run([NGINX, "-t", "-e", "stderr", "-p", tmp, "-c", conf],
                       capture_output=True, text=True, timeout=20)
    assert t.returncode == 0, t.stderr


def deb_field(deb, field):
    return subprocess.run(["dpkg-deb", "-f", deb, field], capture_output=True,
                          text=True, check=True).stdout.strip()


def installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                       capture_output=True, text=True)
    return r.returncode == 0 and "ok installed" in r.stdout


@pytest.mark.skipif(not IS_ROOT, reason="installing packages needs root")
def test_debian_packages_install_load_run_and_remove(tmp):
    for pkg in PACKAGES:
        if installed(pkg):
            pytest.skip("%s is installed on this machine already" % pkg)
    out = os.path.join(tmp, "deb")
    text = make("deb", "DEB_DIR=" + out).stdout
    debs = sorted(os.path.join(out, f) for f in os.listdir(out))
    assert [os.path.basename(d).split("_")[0] for d in debs] == \
        ["idemgate", "libnginx-mod-http-idempotency"], text
    gw, mod = debs

    # the module depends on the exact nginx ABI it was built for
    provides = subprocess.run(["dpkg-query", "-W", "-f=${Provides}", "nginx"],
                              capture_output=True, text=True).stdout
    abi = re.search(r"nginx-abi-[0-9.]+-[0-9]+", provides).group(0)
    assert abi in deb_field(mod, "Depends").split(", ")
    assert "libnginx-mod-http-idempotency (= %s)" % deb_field(gw, "Version") \
        in deb_field(gw, "Depends")

    try:
        r = subprocess.run(["dpkg", "-i", mod, gw], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr

        link = "/etc/nginx/modules-enabled/50-mod-http-idempotency.conf"
        assert os.path.islink(link)
        assert os.path.realpath(link) == \
            "/usr/share/nginx/modules-available/mod-http-idempotency.conf"

        # the packaged nginx loads it, from its own configuration ...
        t = subprocess.run([NGINX, "-t"], capture_output=True, text=True,
                           timeout=20)
        assert t.returncode == 0, t.stderr
        # ... and its directives work there
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write("include /etc/nginx/modules-enabled/*.conf;\n"
                    "pid %s/nginx.pid;\nerror_log stderr;\nevents {}\n"
                    "http {\n    idempotency_store lmdb:%s/store;\n"
                    "    server { listen 127.0.0.1:1; location / {\n"
                    "        idempotency on; proxy_pass http://127.0.0.1:2;\n"
                    "    } location = /m { idempotency_metrics; } }\n}\n"
                    % (tmp, tmp))
        # (nginx's own prefix, where "modules/" is the module directory)
        t = subprocess.run([NGINX, "-t", "-e", "stderr", "-c", conf],
                           capture_output=True, text=True, timeout=20)
        assert t.returncode == 0, t.stderr
        assert "test is successful" in t.stderr

        h = subprocess.run(["/usr/bin/idemgate", "--help"],
                           capture_output=True, text=True, timeout=20)
        assert h.returncode == 0 and h.stdout.startswith("usage: idemgate")
        # the installed gateway finds the installed module
        p = subprocess.run(["/usr/bin/idemgate", "--config", "/etc/idemgate.conf",
                            "--print-config"], capture_output=True, text=True,
                           timeout=20)
        assert p.returncode == 0, p.stderr
        assert 'load_module "/usr/lib/nginx/modules/' \
            'ngx_http_idempotency_module.so";' in p.stdout
        m = subprocess.run(["man", "-w", "idemgate"], capture_output=True,
                           text=True, timeout=20)
        assert m.stdout.strip() == "/usr/share/man/man1/idemgate.1.gz"

        if shutil.which("systemd-analyze"):
            v = subprocess.run(["systemd-analyze", "verify",
                                "/lib/systemd/system/idemgate.service"],
                               capture_output=True, text=True, timeout=60)
            assert v.returncode == 0, v.stderr
            # verify warns, without failing, about what it ignores
            assert "idemgate" not in v.stdout + v.stderr, v.stdout + v.stderr
    finally:
        r = subprocess.run(["dpkg", "-P"] + PACKAGES, capture_output=True,
                           text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for path in ["/usr/bin/idemgate", "/etc/idemgate.conf",
                 "/usr/lib/nginx/modules/ngx_http_idempotency_module.so",
                 "/etc/nginx/modules-enabled/50-mod-http-idempotency.conf",
                 "/lib/systemd/system/idemgate.service"]:
        assert not os.path.lexists(path), path
    t = subprocess.run([NGINX, "-t"], capture_output=True, text=True, timeout=20)
    assert t.returncode == 0, t.stderr
