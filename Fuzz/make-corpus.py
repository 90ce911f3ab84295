#!/usr/bin/env python3
"""Writes the seed corpora under Fuzz/Corpus/<target>/ from the conformance vectors
(Tests/GatewayTokensTests/Vectors), the end-to-end fixtures (Tests/e2e) and hand-written cases.

Usage: Fuzz/make-corpus.py [FUZZ_BINARY]. With the fuzz binary (scripts/fuzz passes it), the seeds that need the
fuzz keys (validly signed tokens and requests carrying them) are written too. Seeds are small: libFuzzer mutates
them, so a short one that reaches a branch is worth more than a long one. Re-running rewrites the same files."""
import ast
import base64
import hashlib
import json
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "Fuzz" / "Corpus"
VECTORS = ROOT / "Tests" / "GatewayTokensTests" / "Vectors"
E2E = ROOT / "Tests" / "e2e"
MAX_SEED = 4096


def save(target: str, data: bytes, name: str | None = None) -> None:
    if len(data) > MAX_SEED:
        return
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (name or hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def e2e_bytes_literals(path: pathlib.Path) -> list[bytes]:
    """Every bytes constant in an e2e test module (raw requests, smuggling shapes)."""
    tree = ast.parse(path.read_text())
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, bytes)]


def e2e_paths() -> list[str]:
    tree = ast.parse((E2E / "test_paths.py").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("/"):
            out.append(node.value)
    return out


def jws_seeds() -> None:
    tokens = [c["compact"] for c in json.loads((VECTORS / "rfc_jws_vectors.json").read_text()) if isinstance(c.get("compact"), str)]
    doc = json.loads((VECTORS / "json_web_signature_test.json").read_text())
    for group in doc["testGroups"]:
        for test in group["tests"][:6]:
            if isinstance(test.get("jws"), str):
                tokens.append(test["jws"])
    for token in tokens:
        save("jws", b"\x00" + token.encode())
    header = b64u(b'{"alg":"HS256","kid":"hs","typ":"at+jwt"}')
    for payload, sig in [(b'{"iss":"https://issuer.fuzz","sub":"u","exp":1}', "AAAA"), (b"{}", ""), (b"null", "x")]:
        save("jws", b"\x00" + f"{header}.{b64u(payload)}.{sig}".encode())
    for raw in [b"", b".", b"..", b"a.b.c", b"e30.e30.", b"eyJhbGciOiJub25lIn0.e30.", b"a.b.c.d.e"]:
        save("jws", b"\x00" + raw)
    # Signing mode with odd headers: the harness signs, the verifier must still refuse what the rules refuse.
    for signer, hdr in [(0, b'{"alg":"HS256","kid":"hs","typ":"at+jwt","crit":["exp"]}'), (1, b'{"alg":"ES256","kid":"es","typ":"JWT"}'),
                        (3, b'{"alg":"none","kid":"rs"}'), (4, b'{"alg":"EdDSA","kid":"ed","typ":"application/AT+JWT"}')]:
        save("jws", bytes([1, signer]) + hdr + b"\x00" +
             b'{"iss":"https://issuer.fuzz","sub":"u","aud":["x","api"],"exp":1767229200,"nbf":1e9,"scp":["a"]}')


def json_seeds() -> None:
    cases = [b"{}", b"[]", b'"\\u00e9\\ud83d\\ude00"', b"-0.0e+10", b"123456789012345678901234567890", b'{"a":1,"a":2}',
             b'{"a":[1,{"b":null}],"c":true}', b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
             b'"\\ud800"', b'"\xc3\x28"', b"1e400", b" \t\n\r{ } ", b"[1,]", b'{"x":"\x01"}']
    for case in cases:
        save("json", b"\x00" + case)
    for name in ["json_web_key_test.json", "rfc_jws_vectors.json"]:
        doc = json.loads((VECTORS / name).read_text())
        groups = doc["testGroups"] if isinstance(doc, dict) else [{"tests": doc}]
        for group in groups[:8]:
            save("json", b"\x00" + json.dumps(group.get("private") or group["tests"][0], separators=(",", ":")).encode())
    for path in [ROOT / "gateway.json", ROOT / "users.json"]:
        save("json", b"\x00" + path.read_bytes())


def config_seeds() -> None:
    for path in [ROOT / "gateway.json", ROOT / "deploy" / "gateway.container.json"]:
        if path.exists():
            save("config", path.read_bytes())
    # The README's example configuration (the first json block under "## Configuration").
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```json\n(.*?)```", readme, re.S):
        text = block.strip()
        if text.startswith("{"):
            save("config", text.encode())
    save("config", b'{"upstreams":{"a":{"url":"http://127.0.0.1:1/b"}},"routes":[{"path_prefix":"/x;y","upstream":"a"}]}')
    save("config", b'{"routes":[{"path_prefix":"/","upstream":"demo","auth":"none"}],"issuers":[{"issuer":"i","hmac_secret":"${SECRET}","algorithms":["HS256"]}]}')
    save("config", b'{"listen":"[::1]:${PORT}","admin_listen":false,"upstreams":{"s":{"url":"http://x.local","unix_socket":"/run/s.sock"}},"routes":[{"path_prefix":"/a/../b","upstream":"s"}]}')
    # Findings, kept as seeds: an empty upstream name passed validation and trapped the policy's construction.
    save("config", b'{"routes":[{"path_prefix":"/","upstream":"","auth":"none"}],"issuers":[{"issuer":"i","hmac_secret":"${SECRET}","algorithms":["HS256"]}]}')
    save("config", b'{"upstreams":{"a":{"url":"http://a"}},"routes":[{"path_prefix":"/","upstream":"a"}],"token_service":{"login_upstream":{"upstream":""}}}')
    save("config", b'{"issuers":[{"issuer":"${ISSUER}","discovery":true,"jwks_refetch_cooldown_seconds":0}],"token_service":{"issuer":"$${x}","users_file":"u.json"},"store":{"type":"memory"}}')


def path_seeds() -> None:
    for path in set(e2e_paths()):
        save("path", path.encode("utf-8", "surrogateescape"))
    for path in ["/", "/a/b/c", "/api;v=1/x", "/api/..;/x", "/%41%2f", "/a?b#c", "/a/./b/../../..", "/%zz", "//", "/api",
                 "/x/y;p/../z", "/a%20b"]:
        save("path", path.encode())


def bearer_seeds() -> None:
    for lines in ["Authorization:Bearer abc.def.ghi", "authorization:bearer   a-b_c~+/==", "Authorization:Bearer",
                  "Authorization:Bearer x, Bearer y", "Authorization:Basic dXNlcjpwYXNz", "Authorization:Bearer\tabc",
                  "Authorization:Bearer a\nAuthorization:Bearer b", "AUTHORIZATION:BEARER x\nX-Other:1", "Authorization:Bearerx y"]:
        save("bearer", lines.encode())


def curl_header_seeds() -> None:
    heads = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-A:  b  \r\n\r\n",
        b"HTTP/2 200\r\nset-cookie: a=b\r\n x-folded\r\n\r\n",
        b"HTTP/1.1 404\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.0 301 Moved\nLocation: /x\n\nTrailer: 1\r\n",
        b"HTTP/1.1 999 X\r\nX: \x01\r\n\r\n",
        b"\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    ]
    for head in heads:
        save("curl-header", head)


def token_body_seeds() -> None:
    forms = [b"grant_type=password&username=demo&password=demo-password&scope=read+write",
             b"grant_type=refresh_token&refresh_token=rt.abc%2B%2F%3D", b"token=a&token_type_hint=refresh_token",
             b"a=1&a=2", b"x=%zz", b"=v&&n=", b"u=%C3%A9%00", b"name=%E2%82%AC+sign"]
    for form in forms:
        save("token-body", b"\x00" + form)
    for doc in [b'{"grant_type":"password","username":"demo","password":"p"}', b'{"a":1}', b"[]", b'{"a":"b","a":"c"}',
                b'{"refresh_token":"\\u0000"}']:
        save("token-body", b"\x01" + doc)
    save("token-body", b"\x04" + forms[0])
    save("token-body", b"\xf1" + forms[0])


def request_head_seeds() -> None:
    for module in ["test_framing.py", "test_headers.py", "test_limits.py", "test_paths.py", "test_auth.py"]:
        for literal in e2e_bytes_literals(E2E / module):
            if re.match(rb"^(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE) ", literal):
                save("request-head", b"\x00" + literal.replace(b"{token}", b"abc.def.ghi"))
    hand = [
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /public/x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /a HTTP/1.0\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"GET /public/%2e%2e/x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 99999\r\n\r\n",
    ]
    for case in hand:
        save("request-head", b"\x00" + case)
        save("request-head", b"\x83" + case)  # the same bytes in 4-byte reads


def keyset_seeds() -> None:
    doc = json.loads((VECTORS / "json_web_key_test.json").read_text())
    for group in doc["testGroups"]:
        private = group.get("private") or {}
        public = {k: v for k, v in private.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
        save("keyset", b"\x00" + json.dumps({"keys": [public]}).encode())
    for case in json.loads((VECTORS / "rfc_jws_vectors.json").read_text()):
        if isinstance(case.get("jwk"), dict):
            public = {k: v for k, v in case["jwk"].items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
            save("keyset", b"\x00" + json.dumps({"keys": [public]}).encode())
    save("keyset", b'\x01{"issuer":"https://issuer.fuzz","jwks_uri":"https://issuer.fuzz/keys"}')
    save("keyset", b'\x01{"issuer":"https://issuer.fuzz","jwks_uri":"http://127.0.0.1:8/k?x=1"}')
    save("keyset", b'\x01{"issuer":"https://issuer.fuzz","jwks_uri":"http://[::1]/k#f"}')
    for cc in [b"max-age=300\nage:10", b"no-cache, max-age=5", b"max-age=\"60\"\nage:abc", b"public,max-age=99999999999999999999"]:
        save("keyset", b"\x02" + cc)
    pems = re.findall(r"-----BEGIN [A-Z ]+-----.*?-----END [A-Z ]+-----",
                      (ROOT / "Tests" / "GatewayTokensTests" / "PEMFixtures.swift").read_text(), re.S)
    for index, pem in enumerate(pems):
        for alg in (3, 9, 10, 11):  # RS256, ES256, ES384, EdDSA in JWSAlgorithm.allCases order
            save("keyset", b"\x03" + bytes([alg]) + pem.encode())
        body = "".join(pem.splitlines()[1:-1])
        try:
            save("keyset", b"\x04" + bytes([9 if index % 2 else 3]) + base64.b64decode(body))
        except ValueError:
            pass


def websocket_seeds() -> None:
    def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True, rsv1: bool = False) -> bytes:
        head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
        mask = 0x80 if masked else 0
        n = len(payload)
        if n < 126:
            head += bytes([mask | n])
        elif n < 65536:
            head += bytes([mask | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([mask | 127]) + n.to_bytes(8, "big")
        return head + (b"\x11\x22\x33\x44" if masked else b"") + payload

    for masked, sender in ((True, 0), (False, 1)):
        stream = (frame(1, b"hello", masked=masked) + frame(2, b"x" * 300, fin=False, masked=masked)
                  + frame(9, b"p", masked=masked) + frame(0, b"y" * 10, masked=masked)
                  + frame(1, b"z" * 20, rsv1=True, masked=masked) + frame(8, b"\x03\xe8bye", masked=masked))
        for control in (0x00, 0x40, 0x7e, 0xf0):
            save("websocket", bytes([control | sender]) + stream)
        save("websocket", bytes([sender]) + frame(2, b"q" * 70000, masked=masked)[:200])
        save("websocket", bytes([0x20 | sender]) + frame(10, b"a" * 126, masked=masked))
        save("websocket", bytes([0x20 | sender]) + frame(0, b"c", masked=masked))
        save("websocket", bytes([0x20 | (1 - sender)]) + frame(1, b"wrong mask", masked=masked))


def http2_seeds() -> None:
    """Client frames after the preface (the harness sends the preface and an empty SETTINGS frame itself)."""
    try:
        import h2.config
        import h2.connection
    except ImportError:
        return
    requests = [
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")],
        [(":method", "GET"), (":scheme", "https"), (":path", "/public/x?y=1"), (":authority", "a"), ("x-auth-subject", "spoof")],
        [(":method", "POST"), (":scheme", "http"), (":path", "/admin/x"), (":authority", "a"), ("content-length", "3"),
         ("authorization", "Bearer abc.def.ghi")],
        [(":method", "GET"), (":scheme", "http"), (":path", "/api/%2e%2e/x"), ("host", "internal.test"), (":authority", "b")],
        [(":method", "CONNECT"), (":authority", "a:443")],
        [(":method", "GET"), (":scheme", "http"), (":path", "/x"), (":authority", "a"), ("te", "trailers"),
         ("content-type", "application/grpc")],
    ]
    for index, headers in enumerate(requests):
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                                                            validate_outbound_headers=False))
        conn.initiate_connection()
        conn.data_to_send()  # the preface and SETTINGS: the harness sends its own
        end = headers[0][1] != "POST"
        conn.send_headers(1, headers, end_stream=end)
        if not end:
            conn.send_data(1, b"abc", end_stream=True)
        conn.send_headers(3, requests[0], end_stream=True)
        conn.reset_stream(3)
        conn.ping(b"12345678")
        frames = conn.data_to_send()
        save("http2", b"\x00" + frames)
        save("http2", bytes([0x80 | (index * 7 % 64)]) + frames)  # the same frames cut into small reads


def chunked_seeds() -> None:
    # First byte: the size of the pieces (1-16) the rest is fed in.
    bodies = [
        b"9\r\nrefused w\r\nA;ext=\"x\"\r\nith 403 ok\r\n1 ; e\r\n\n\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"5\r\nhello\r\n0\r\n\r\n",
        b"0\r\n\r\n",
        b"fffffffffffffff\r\nab",
        b"3\r\nabcd\r\n",
        b"1000000000000000\r\n",
        b"4\r\nwiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n",
    ]
    for index, body in enumerate(bodies):
        save("chunked", bytes([index * 5 % 16]) + body)


def main() -> None:
    jws_seeds()
    json_seeds()
    config_seeds()
    path_seeds()
    bearer_seeds()
    curl_header_seeds()
    token_body_seeds()
    request_head_seeds()
    keyset_seeds()
    websocket_seeds()
    http2_seeds()
    chunked_seeds()
    if len(sys.argv) > 1:
        subprocess.run([sys.argv[1], f"--write-seeds={CORPUS}"], check=True)
    for folder in sorted(CORPUS.iterdir()):
        print(f"{folder.name}: {len(list(folder.iterdir()))} seeds")


if __name__ == "__main__":
    main()
