"""SPEC §4 through real nginx: two requests that the API can read
differently never share a fingerprint (the second use of the key is a 400
mismatch, not a replay), and two spellings of the same parameters do (the
second is a replay). Queries and bodies are sent as raw bytes with
http.client, because requests rewrites escapes such as %61 on the way."""

import gzip
import http.client

import pytest

from conftest import unique_key

FORM = "application/x-www-form-urlencoded"


def send(gateway, target, key, body=b"", ctype=None, headers=()):
    """POST target with the key, Content-Type ctype and the header fields
    of headers (name, value pairs, sent in order; a Host among them
    replaces http.client's own)."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    fields = [("Idempotency-Key", key)]
    if ctype is not None:
        fields.append(("Content-Type", ctype))
    fields += list(headers)
    try:
        conn.putrequest("POST", target, skip_accept_encoding=True,
                        skip_host=any(n.lower() == "host" for n, _ in fields))
        for name, value in fields:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.getheader("Idempotent-Replayed"), r.read()
    finally:
        conn.close()


def assert_mismatch(gateway, upstream, first, second):
    key = unique_key()
    status, replayed, _ = send(gateway, key=key, **first)
    assert status < 400 and replayed is None
    status, replayed, body = send(gateway, key=key, **second)
    assert status == 400, body
    assert replayed is None
    assert b"can only be used with the same parameters" in body
    assert upstream.executions(key) == 1


def assert_replay(gateway, upstream, first, second):
    key = unique_key()
    status, replayed, body1 = send(gateway, key=key, **first)
    assert replayed is None
    status2, replayed, body2 = send(gateway, key=key, **second)
    assert replayed == "true", body2
    assert (status2, body2) == (status, body1)
    assert upstream.executions(key) == 1


# --- the query ----------------------------------------------------------------

def test_escaped_name_keeps_its_place_among_its_values(gateway, upstream):
    assert_mismatch(gateway, upstream, {"target": "/bench?%61=1&a=2"},
                    {"target": "/bench?a=2&%61=1"})


def test_escaped_name_is_that_name(gateway, upstream):
    assert_replay(gateway, upstream, {"target": "/bench?%61=1"},
                  {"target": "/bench?a=1"})


def test_plus_and_percent_20_are_one_space(gateway, upstream):
    assert_replay(gateway, upstream, {"target": "/bench?q=a+b&x=1"},
                  {"target": "/bench?x=1&q=a%20b"})


def test_plus_is_not_an_escaped_plus(gateway, upstream):
    assert_mismatch(gateway, upstream, {"target": "/bench?q=a+b"},
                    {"target": "/bench?q=a%2Bb"})


def test_escaped_ampersand_is_part_of_the_value(gateway, upstream):
    assert_mismatch(gateway, upstream, {"target": "/bench?a=1%262"},
                    {"target": "/bench?a=1&2"})


def test_bad_escape_is_not_its_escaped_text(gateway, upstream):
    assert_mismatch(gateway, upstream, {"target": "/bench?a=%zz"},
                    {"target": "/bench?a=%25zz"})


def test_name_alone_is_not_an_empty_value(gateway, upstream):
    assert_mismatch(gateway, upstream, {"target": "/bench?a"},
                    {"target": "/bench?a="})


# --- form bodies --------------------------------------------------------------

def test_form_escaped_name_keeps_its_place(gateway, upstream):
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": b"%61=1&a=2", "ctype": FORM},
                    {"target": "/bench", "body": b"a=2&%61=1", "ctype": FORM})


def test_form_spellings_of_the_same_pairs_replay(gateway, upstream):
    assert_replay(gateway, upstream,
                  {"target": "/bench", "body": b"%6Eame=Jane+Doe&amount=1%2e5",
                   "ctype": FORM},
                  {"target": "/bench", "body": b"amount=1.5&name=Jane%20Doe",
                   "ctype": FORM})


def test_form_plus_is_not_an_escaped_plus(gateway, upstream):
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": b"q=1+2", "ctype": FORM},
                    {"target": "/bench", "body": b"q=1%2B2", "ctype": FORM})


def test_large_form_fingerprinted_on_the_thread_pool(gateway, upstream):
    # beyond the 16 KiB that the event loop fingerprints itself
    filler = b"&f=" + b"x" * 20000
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": b"%61=1&a=2" + filler,
                     "ctype": FORM},
                    {"target": "/bench", "body": b"a=2&%61=1" + filler,
                     "ctype": FORM})
    assert_replay(gateway, upstream,
                  {"target": "/bench", "body": b"%61=1&b=2" + filler,
                   "ctype": FORM},
                  {"target": "/bench", "body": b"b=2" + filler + b"&a=1",
                   "ctype": FORM})


# --- the media type and its parameters ---------------------------------------

MULTIPART_BODY = (b"--A\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1"
                  b"\r\n--A--\r\n--B\r\nContent-Disposition: form-data; "
                  b"name=\"a\"\r\n\r\n2\r\n--B--\r\n")


def test_multipart_boundary_matters(gateway, upstream):
    assert_mismatch(
        gateway, upstream,
        {"target": "/bench", "body": MULTIPART_BODY,
         "ctype": "multipart/form-data; boundary=A"},
        {"target": "/bench", "body": MULTIPART_BODY,
         "ctype": "multipart/form-data; boundary=B"})


@pytest.mark.parametrize("first,second", [
    ("text/plain; charset=utf-8", "text/plain; charset=iso-8859-1"),
    ("text/plain; charset=utf-8", "text/plain"),
    (FORM + "; charset=utf-8", FORM + "; charset=iso-8859-1"),
])
def test_charset_matters(gateway, upstream, first, second):
    body = b"a=caf\xc3\xa9"
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": body, "ctype": first},
                    {"target": "/bench", "body": body, "ctype": second})


@pytest.mark.parametrize("first,second", [
    ("application/json; charset=utf-8", "application/json;charset=\"utf-8\""),
    ("application/json; charset=utf-8", "Application/JSON ; Charset = utf-8"),
    ("multipart/form-data; boundary=\"A\"", "multipart/form-data; boundary=A"),
])
def test_spellings_of_one_media_type_replay(gateway, upstream, first, second):
    assert_replay(gateway, upstream,
                  {"target": "/bench", "body": b'{"a": 1, "b": 2}',
                   "ctype": first},
                  {"target": "/bench", "body": b'{"a": 1, "b": 2}',
                   "ctype": second})


def test_json_with_charset_still_canonical(gateway, upstream):
    assert_replay(gateway, upstream,
                  {"target": "/bench", "body": b'{"a": 1, "b": [1, 2]}',
                   "ctype": "application/json; charset=utf-8"},
                  {"target": "/bench", "body": b'{"b":[1,2],"a":1}',
                   "ctype": "application/json;charset=\"utf-8\""})


# --- JSON numbers: compared as they are spelled --------------------------------

@pytest.mark.parametrize("first,second", [
    (b'{"a":1.0}', b'{"a":1.00}'),
    (b'{"a":1e0}', b'{"a":1E0}'),
    (b'{"a":1e0}', b'{"a":1e+0}'),
    (b'{"a":1E0}', b'{"a":1e+0}'),
    (b'{"a":0.1}', b'{"a":0.10}'),
    (b'{"a":1.5}', b'{"a":15e-1}'),
    (b'{"a":1e308}', b'{"a":10e307}'),
    (b'{"a":0}', b'{"a":-0}'),
    (b'{"a":1}', b'{"a":1.0}'),
    (b'{"a":12345678901234567.1}', b'{"a":12345678901234567.2}'),
])
def test_json_number_spellings_differ(gateway, upstream, first, second):
    # an API that reads exact decimals (Decimal, BigDecimal, json.Number),
    # or -0 as JavaScript does, reads each pair as two values
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": first,
                     "ctype": "application/json"},
                    {"target": "/bench", "body": second,
                     "ctype": "application/json"})


@pytest.mark.parametrize("first,second", [
    (b'{"a": 1.50, "b": [0.10, -0]}', b'{"b":[0.10,-0],"a":1.50}'),
    (b'{"a":"\\u00e9\\/"}', b'{"a":"\xc3\xa9/"}'),
    (b'{"n": 123456789012345678901234567890, "m": 1e400}',
     b'{"m":1e400,"n":123456789012345678901234567890}'),
])
def test_json_order_whitespace_and_escapes_replay(gateway, upstream, first,
                                                  second):
    assert_replay(gateway, upstream,
                  {"target": "/bench", "body": first,
                   "ctype": "application/json"},
                  {"target": "/bench", "body": second,
                   "ctype": "application/json"})


# --- the charset of a JSON body -------------------------------------------------

def test_json_of_another_charset_compared_as_bytes(gateway, upstream):
    # in ISO-8859-1, "\xc3\xa9" is two characters and "\u00e9" one
    latin1 = "application/json; charset=iso-8859-1"
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": b'{"a":"\xc3\xa9"}',
                     "ctype": latin1},
                    {"target": "/bench", "body": b'{"a":"\\u00e9"}',
                     "ctype": latin1})
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": b'{"a": 1, "b": 2}',
                     "ctype": latin1},
                    {"target": "/bench", "body": b'{"b":2,"a":1}',
                     "ctype": latin1})


@pytest.mark.parametrize("ctype", [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=UTF8",
    "application/json; charset=\"Utf-8\"",
])
def test_json_in_utf8_stays_canonical(gateway, upstream, ctype):
    assert_replay(gateway, upstream,
                  {"target": "/bench", "body": b'{"a":"\xc3\xa9", "b": 2}',
                   "ctype": ctype},
                  {"target": "/bench", "body": b'{"b":2,"a":"\\u00e9"}',
                   "ctype": ctype})


# --- headers that are forwarded ---------------------------------------------------

GZIPPED = gzip.compress(b'{"a":1}', mtime=0)


def test_content_encoding_matters(gateway, upstream):
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": GZIPPED,
                     "ctype": "application/json",
                     "headers": [("Content-Encoding", "gzip")]},
                    {"target": "/bench", "body": GZIPPED,
                     "ctype": "application/json"})
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": GZIPPED,
                     "ctype": "application/json"},
                    {"target": "/bench", "body": GZIPPED,
                     "ctype": "application/json",
                     "headers": [("Content-Encoding", "gzip")]})
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": GZIPPED,
                     "headers": [("Content-Encoding", "gzip")]},
                    {"target": "/bench", "body": GZIPPED,
                     "headers": [("Content-Encoding", "br")]})


def test_same_content_encoding_replays(gateway, upstream):
    assert_replay(gateway, upstream,
                  {"target": "/bench", "body": GZIPPED,
                   "headers": [("Content-Encoding", "gzip")]},
                  {"target": "/bench", "body": GZIPPED,
                   "headers": [("Content-Encoding", "gzip")]})


def test_host_is_not_a_parameter(gateway, upstream):
    # a Host names the node the client addressed: a retry sent to another
    # node, or to another name of this one, replays
    assert_replay(gateway, upstream,
                  {"target": "/bench", "body": b'{"a":1}',
                   "ctype": "application/json",
                   "headers": [("Host", "node-a.example")]},
                  {"target": "/bench", "body": b'{"a":1}',
                   "ctype": "application/json",
                   "headers": [("Host", "node-b.example:8443")]})


def test_host_matters_when_fingerprinted(gateway_factory, upstream):
    # an API that tells tenants apart by Host names it
    g = gateway_factory(directives=["idempotency_fingerprint_header Host;"])
    assert_mismatch(g, upstream,
                    {"target": "/bench", "body": b'{"a":1}',
                     "ctype": "application/json",
                     "headers": [("Host", "tenant-a.example")]},
                    {"target": "/bench", "body": b'{"a":1}',
                     "ctype": "application/json",
                     "headers": [("Host", "tenant-b.example")]})


def test_second_content_type_matters(gateway, upstream):
    body = b'{"a":1}'
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": body,
                     "ctype": "application/json"},
                    {"target": "/bench", "body": body,
                     "ctype": "application/json",
                     "headers": [("Content-Type", "text/plain")]})
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": body,
                     "ctype": "application/json",
                     "headers": [("Content-Type", "text/plain")]},
                    {"target": "/bench", "body": body,
                     "ctype": "application/json",
                     "headers": [("Content-Type", "application/xml")]})


def test_body_with_two_content_types_compared_as_bytes(gateway, upstream):
    # the API may read it as text/plain, where whitespace and order count
    two = [("Content-Type", "text/plain")]
    assert_mismatch(gateway, upstream,
                    {"target": "/bench", "body": b'{"a": 1, "b": 2}',
                     "ctype": "application/json", "headers": two},
                    {"target": "/bench", "body": b'{"b":2,"a":1}',
                     "ctype": "application/json", "headers": two})
    assert_replay(gateway, upstream,
                  {"target": "/bench", "body": b'{"a": 1}',
                   "ctype": "application/json", "headers": two},
                  {"target": "/bench", "body": b'{"a": 1}',
                   "ctype": "application/json", "headers": two})
