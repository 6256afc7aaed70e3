"""The documentation against the code it documents: the man page
idemgate(1) renders with `man -l` without a warning and covers every flag
of `idemgate --help`, every signal, the files and the exit statuses; the
module's directive reference has a section, in nginx's own style, for
every directive of the module's command table and every variable it adds.
"""

import os
import re
import shutil
import subprocess

import pytest

from test_gateway_cli import ROOT, run_cli

MAN = os.path.join(ROOT, "docs", "idemgate.1")
REFERENCE = os.path.join(ROOT, "docs", "ngx_http_idempotency_module.md")
MODULE_C = os.path.join(ROOT, "nginx", "ngx_http_idempotency_module.c")
VARIABLES_C = os.path.join(ROOT, "nginx", "ngx_http_idempotency_variables.c")


def render_man():
    if shutil.which("man") is None:
        pytest.skip("no man")
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_FORMATTING="")
    r = subprocess.run(["man", "--warnings", "-E", "UTF-8", "-l", MAN],
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    return r


def plain(text):
    """The rendered page without overstrikes, hyphens as '-'."""
    text = re.sub(r".\x08", "", text)
    return text.replace("\u2010", "-").replace("\u2212", "-")


def test_man_page_renders_without_warnings():
    r = render_man()
    assert r.stderr == ""
    assert r.stdout.startswith("IDEMGATE(1)")
    # groff itself, every warning on
    g = subprocess.run(["groff", "-man", "-ww", "-z", MAN],
                       capture_output=True, text=True, timeout=30)
    assert g.returncode == 0 and g.stderr == "", g.stderr


def help_flags():
    out = run_cli("--help").stdout
    return sorted(set(re.findall(r"^  (--[a-z-]+)", out, re.M)))


def test_man_page_covers_every_flag_of_help():
    text = plain(render_man().stdout)
    flags = help_flags()
    assert len(flags) > 25
    # each flag starts an entry of its own (an indented line)
    for flag in flags:
        assert re.search(r"^ +%s\b" % re.escape(flag), text, re.M), flag


def test_man_page_covers_signals_files_and_exit_status():
    text = plain(render_man().stdout)
    for section in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS",
                    "FILES", "EXIT STATUS", "EXAMPLES", "SEE ALSO"]:
        assert re.search(r"^%s$" % section, text, re.M), section
    signals = text[text.index("\nSIGNALS"):text.index("\nFILES")]
    help_text = run_cli("--help").stdout
    for sig in set(re.findall(r"SIG[A-Z0-9]+", help_text)):
        assert sig in signals, sig
    files = text[text.index("\nFILES"):text.index("\nEXIT STATUS")]
    for path in ["idemgate-data", "/etc/ssl/certs/ca-certificates.crt",
                 "/usr/sbin/nginx", "$TMPDIR/idemgate."]:
        assert path in files, path
    status = text[text.index("\nEXIT STATUS"):text.index("\nEXAMPLES")]
    for code in ("0", "1", "2"):
        assert re.search(r"^ +%s +\S" % code, status, re.M), code


def module_names():
    with open(MODULE_C) as f:
        src = f.read()
    commands = src[src.index("ngx_http_idempotency_commands[]"):]
    commands = commands[:commands.index("ngx_null_command")]
    with open(VARIABLES_C) as f:
        src = f.read()
    variables = src[src.index("ngx_http_idempotency_vars[]"):]
    variables = variables[:variables.index("ngx_http_null_variable")]
    return (re.findall(r'ngx_string\("([a-z_]+)"\)', commands),
            re.findall(r'ngx_string\("([a-z_]+)"\)', variables))


def sections(text):
    """{title: body} of the "### title" sections."""
    parts = re.split(r"^### (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_directive_reference_covers_every_directive_and_variable():
    with open(REFERENCE) as f:
        text = f.read()
    directives, variables = module_names()
    assert len(directives) >= 15 and len(variables) >= 4
    secs = sections(text)
    for d in directives:
        assert d in secs, d
        body = secs[d]
        syntax = re.search(r"^\| Syntax: +\| `(.+?)` *\|$", body, re.M)
        assert syntax, d
        assert syntax.group(1).startswith(d + " ") or \
            syntax.group(1) == d + ";", (d, syntax.group(1))
        assert re.search(r"^\| Default: +\| .+\|$", body, re.M), d
        context = re.search(r"^\| Context: +\| (.+?) *\|$", body, re.M)
        assert context, d
        contexts = set(re.findall(r"`(http|server|location)`", context.group(1)))
        assert contexts, d
        # prose after the table
        assert len(body.split("|\n")[-1].strip()) > 40, d
    for v in variables:
        assert "$" + v in secs, v
        assert len(secs["$" + v].strip()) > 20, v
    # nothing documented that the module does not have
    documented = {s for s in secs if not s.startswith("$")}
    assert documented == set(directives), documented ^ set(directives)


def test_directive_reference_contexts_match_the_command_table():
    with open(MODULE_C) as f:
        src = f.read()
    src = src[src.index("ngx_http_idempotency_commands[]"):]
    src = src[:src.index("ngx_null_command")]
    with open(REFERENCE) as f:
        secs = sections(f.read())
    table = re.findall(
        r'\{ ngx_string\("(idempotency[a-z_]*)"\),\s*([A-Z_|0-9]+),', src)
    assert len(table) == len(module_names()[0])
    for name, flags in table:
        want = set()
        if "NGX_HTTP_MAIN_CONF" in flags:
            want.add("http")
        if "NGX_HTTP_SRV_CONF" in flags:
            want.add("server")
        if "NGX_HTTP_LOC_CONF" in flags:
            want.add("location")
        context = re.search(r"^\| Context: +\| (.+?) *\|$", secs[name], re.M)
        got = set(re.findall(r"`(http|server|location)`", context.group(1)))
        assert got == want, (name, got, want)
