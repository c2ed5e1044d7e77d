"""[auth] against a real node (docs/authorization.md): the RFC 9728 metadata, 401 with
the WWW-Authenticate a client follows, invalid tokens, a valid token served over
Streamable HTTP and WebSocket, 403 insufficient_scope for the required and per-tool
scopes, a JWKS rotation, tokens never logged, the refusal counter, --check-config, and
auth off leaving everything as it was.

No authorization server is reachable from the test machines: tokens are minted here,
shaped like the access tokens of RFC 9068 (iss, aud, exp, iat, sub, scope), and signed
with the openssl command line (RS256, EdDSA), not with the library the node verifies with.
"""
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cmcp_harness import Node, main, run_config_check  # noqa: E402
from mcp_client import HttpConn, Ws, free_port, PROTOCOL  # noqa: E402
from ops_client import http_get, wait_metric  # noqa: E402

ISS = "https://auth.example.test"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def openssl(*args, data=None):
    return subprocess.run(["openssl"] + list(args), input=data, capture_output=True,
                          check=True, timeout=30).stdout


class Keys:
    """An RSA and an Ed25519 key pair made by openssl in a temporary directory."""

    def __init__(self, d, name):
        self.rsa = os.path.join(d, name + "-rsa.pem")
        self.ed = os.path.join(d, name + "-ed.pem")
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                self.rsa)
        openssl("genpkey", "-algorithm", "ed25519", "-out", self.ed)
        self.name = name
        modulus = openssl("rsa", "-in", self.rsa, "-noout", "-modulus").decode()
        n = bytes.fromhex(modulus.strip().split("=", 1)[1])
        self.rsa_jwk = {"kty": "RSA", "kid": name + "-rsa", "use": "sig", "alg": "RS256",
                        "n": b64(n), "e": "AQAB"}
        der = openssl("pkey", "-in", self.ed, "-pubout", "-outform", "DER")
        self.ed_jwk = {"kty": "OKP", "crv": "Ed25519", "kid": name + "-ed", "x": b64(der[-32:])}

    def jwks(self):
        return {"keys": [self.rsa_jwk, self.ed_jwk]}

    def token(self, claims, alg="RS256", kid=None):
        hdr = {"alg": alg, "typ": "at+jwt",
               "kid": kid or (self.rsa_jwk["kid"] if alg == "RS256" else self.ed_jwk["kid"])}
        signing_input = (b64(json.dumps(hdr).encode()) + "." +
                         b64(json.dumps(claims).encode())).encode()
        if alg == "RS256":
            sig = openssl("dgst", "-sha256", "-sign", self.rsa, data=signing_input)
        else:
            with tempfile.NamedTemporaryFile() as f:
                f.write(signing_input)
                f.flush()
                sig = openssl("pkeyutl", "-sign", "-inkey", self.ed, "-rawin", "-in", f.name)
        return signing_input.decode() + "." + b64(sig)


def token_hash(t):
    return hashlib.sha256(t.encode()).hexdigest()[:8]


INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def www_params(value):
    """The auth-params of a 'Bearer k="v", k2="v2"' challenge."""
    assert value.startswith("Bearer "), value
    out = {}
    for part in value[len("Bearer "):].split('", '):
        k, _, v = part.partition("=")
        out[k.strip()] = v.strip().strip('"')
    return out


class AuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="cmcp-auth-")
        cls.keys = Keys(cls.dir, "one")
        cls.jwks = os.path.join(cls.dir, "jwks.json")
        with open(cls.jwks, "w") as f:
            json.dump(cls.keys.jwks(), f)
        cls.http, cls.metrics = free_port(), free_port()
        cls.aud = "http://127.0.0.1:%d/mcp" % cls.http
        cls.node = Node(f"""
[tools]
packs = core
[listener]
http_port = {cls.http}
tcp_port = 0
[metrics]
port = {cls.metrics}
[admin]
endpoint =
[tree.shard]
count = 2
[auth]
enabled = true
issuer = {ISS}
audience = {cls.aud}
jwks_file = {cls.jwks}
required_scopes = mcp
tool_scopes = add=math:add, kv_set=kv:write kv:admin
""").start()
        cls.tokens = []

    @classmethod
    def tearDownClass(cls):
        cls.node.cleanup()
        subprocess.run(["rm", "-rf", cls.dir], check=False)

    def claims(self, **kw):
        now = int(time.time())
        c = {"iss": ISS, "aud": self.aud, "exp": now + 300, "iat": now, "sub": "user-1",
             "client_id": "test-client", "scope": "mcp"}
        c.update(kw)
        return {k: v for k, v in c.items() if v is not None}

    def token(self, **kw):
        alg = kw.pop("alg", "RS256")
        keys = kw.pop("keys", self.keys)
        t = keys.token(self.claims(**kw), alg=alg)
        self.tokens.append(t)
        return t

    def conn(self):
        c = HttpConn(self.http)
        self.addCleanup(c.close)
        return c

    def post(self, body, token=None, sid=None, conn=None, path="/mcp"):
        h = {"MCP-Protocol-Version": PROTOCOL}
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if sid:
            h["Mcp-Session-Id"] = sid
        return (conn or self.conn()).request("POST", body, headers=h, path=path)

    def session(self, token):
        c = self.conn()
        r = self.post(INIT, token, conn=c)
        self.assertEqual(r.status, 200, r)
        sid = r.headers["mcp-session-id"]
        r = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, token, sid, c)
        self.assertEqual(r.status, 202, r)
        return c, sid

    def call(self, c, token, sid, name, args, id_=5):
        return self.post({"jsonrpc": "2.0", "id": id_, "method": "tools/call",
                          "params": {"name": name, "arguments": args}}, token, sid, c)

    # ---- the metadata ----
    def test_metadata_is_public(self):
        for path in ("/.well-known/oauth-protected-resource",
                     "/.well-known/oauth-protected-resource/mcp"):
            st, h, body = http_get(self.http, path)
            self.assertEqual(st, 200, body)
            self.assertEqual(h["content-type"], "application/json")
            doc = json.loads(body)
            self.assertEqual(doc["resource"], self.aud)
            self.assertEqual(doc["authorization_servers"], [ISS])
            self.assertEqual(doc["bearer_methods_supported"], ["header"])
            self.assertEqual(set(doc["scopes_supported"]),
                             {"mcp", "math:add", "kv:write", "kv:admin"})
        st, _, _ = http_get(self.http, "/.well-known/oauth-protected-resource", method="POST")
        self.assertEqual(st, 405)

    # ---- refusals ----
    def test_no_token_is_401_with_the_metadata_url(self):
        r = self.post(INIT)
        self.assertEqual(r.status, 401, r)
        p = www_params(r.headers["www-authenticate"])
        self.assertEqual(p["resource_metadata"],
                         "http://127.0.0.1:%d/.well-known/oauth-protected-resource/mcp" % self.http)
        self.assertNotIn("error", p)  # no credentials: no error code (RFC 6750 3.1)
        self.assertEqual(p["scope"], "mcp")
        err = r.json()["error"]
        self.assertIn("Authorization: Bearer", err["message"])
        self.assertEqual(err["data"]["reason"], "missing_token")
        # every MCP endpoint: GET/DELETE /mcp, the legacy transport, the WebSocket upgrade
        c = self.conn()
        for method, path in (("GET", "/mcp"), ("DELETE", "/mcp"), ("GET", "/sse"),
                             ("POST", "/messages?sessionId=x")):
            r = c.request(method, {} if method == "POST" else None, path=path,
                          headers={"Mcp-Session-Id": "0-aaaaaaaaaaaaaaaaaaaaaaaaaa"})
            self.assertEqual(r.status, 401, (method, path, r))
            self.assertIn("resource_metadata=", r.headers["www-authenticate"])
        ws = Ws(self.http)
        self.addCleanup(ws.close)
        self.assertEqual(ws.status, 401)
        r = self.post(INIT, token="")
        self.assertEqual(r.status, 401)

    def test_bad_tokens_are_401_invalid_token(self):
        other = Keys(self.dir, "other")  # not in the JWKS: its kid is unknown
        forged = other.token(self.claims())
        forged_kid = other.token(self.claims(), kid=self.keys.rsa_jwk["kid"])
        self.tokens += [forged, forged_kid]
        cases = {
            "malformed": "not-a-jwt",
            "unknown_key": forged,
            "bad_signature": forged_kid,
            "expired": self.token(exp=int(time.time()) - 3600),
            "not_yet_valid": self.token(nbf=int(time.time()) + 3600),
            "wrong_issuer": self.token(iss="https://evil.example.test"),
            "wrong_audience": self.token(aud="https://other.example.test/mcp"),
        }
        for reason, tok in cases.items():
            r = self.post(INIT, tok)
            self.assertEqual(r.status, 401, (reason, r))
            p = www_params(r.headers["www-authenticate"])
            self.assertEqual(p["error"], "invalid_token", reason)
            self.assertIn("oauth-protected-resource/mcp", p["resource_metadata"])
            self.assertEqual(r.json()["error"]["data"]["reason"], reason)
            self.assertIn("Get a new token", r.json()["error"]["message"])
            if reason not in ("malformed",):
                self.assertTrue(self.node.has_event("auth_refused", reason=reason,
                                                    token_sha256=token_hash(tok)) or
                                self.node.wait_event("auth_refused", reason=reason,
                                                     token_sha256=token_hash(tok)))

    def test_missing_required_scope_is_403(self):
        r = self.post(INIT, self.token(scope="math:add"))
        self.assertEqual(r.status, 403, r)
        p = www_params(r.headers["www-authenticate"])
        self.assertEqual(p["error"], "insufficient_scope")
        self.assertEqual(p["scope"], "mcp")
        self.assertIn("resource_metadata", p)

    # ---- served ----
    def test_valid_token_is_served(self):
        for alg in ("RS256", "EdDSA"):
            tok = self.token(alg=alg)
            c, sid = self.session(tok)
            r = self.call(c, tok, sid, "echo", {"text": "through auth"})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.messages()[0]["result"]["content"][0]["text"], "through auth")
            # a request of the session without the token is refused all the same
            r = self.call(c, None, sid, "echo", {"text": "x"})
            self.assertEqual(r.status, 401)
            r = c.request("DELETE", headers={"Mcp-Session-Id": sid,
                                             "Authorization": "Bearer " + tok})
            self.assertEqual(r.status, 200, r)

    def test_tool_scope_is_403_and_other_tools_go_on(self):
        tok = self.token(scope="mcp")
        c, sid = self.session(tok)
        r = self.call(c, tok, sid, "add", {"a": 1, "b": 2}, id_=11)
        self.assertEqual(r.status, 403, r)
        p = www_params(r.headers["www-authenticate"])
        self.assertEqual(p["error"], "insufficient_scope")
        self.assertEqual(p["scope"], "mcp math:add")
        self.assertEqual(r.json()["id"], 11)
        self.assertIn("tool 'add'", r.json()["error"]["message"])
        self.assertEqual(r.json()["error"]["data"]["reason"], "tool_scope")
        r = self.call(c, tok, sid, "echo", {"text": "fine"})
        self.assertEqual(r.status, 200, r)
        # kv_set needs both of its scopes
        tok_half = self.token(scope="mcp kv:write")
        r = self.call(c, tok_half, sid, "kv_set", {"key": "k", "value": "v"})
        self.assertEqual(r.status, 403, r)
        tok2 = self.token(scope="mcp math:add kv:write kv:admin")
        r = self.call(c, tok2, sid, "add", {"a": 40, "b": 2})
        self.assertEqual(r.status, 200, r)
        self.assertIn("42", json.dumps(r.messages()[0]["result"]))
        self.assertTrue(self.node.wait_event("auth_refused", reason="tool_scope", tool="add",
                                             token_sha256=token_hash(tok)))

    def test_websocket_with_a_token(self):
        tok = self.token(scope="mcp")
        ws = Ws(self.http, headers={"Authorization": "Bearer " + tok})
        self.addCleanup(ws.close)
        self.assertEqual(ws.status, 101)
        ws.send(INIT)
        self.assertIn("result", ws.recv())
        ws.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        ws.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                 "params": {"name": "add", "arguments": {"a": 1, "b": 1}}})
        m = ws.recv()
        self.assertEqual(m["id"], 2)
        self.assertEqual(m["error"]["data"]["reason"], "tool_scope")
        ws.send({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                 "params": {"name": "echo", "arguments": {"text": "ws"}}})
        self.assertEqual(ws.recv()["result"]["content"][0]["text"], "ws")
        bad = Ws(self.http, headers={"Authorization": "Bearer " + self.token(iss="https://x.test")})
        self.addCleanup(bad.close)
        self.assertEqual(bad.status, 401)

    def test_refusals_are_counted(self):
        self.post(INIT)
        wait_metric(self.metrics, "cmcp_auth_refused_total", 'reason="missing_token"',
                    lambda v: v >= 1)
        # every reason is there from the start, at 0 until it happens
        for reason in ("unsupported_alg", "insufficient_scope", "tool_scope", "expired"):
            wait_metric(self.metrics, "cmcp_auth_refused_total", 'reason="%s"' % reason,
                        lambda v: v >= 0)

    def test_z_jwks_rotation_and_no_token_in_logs(self):
        # Runs last (z): a new key set replaces the old one while the node runs.
        tok = self.token()
        self.assertEqual(self.post(INIT, tok).status, 200)
        new = Keys(self.dir, "new")
        tmp = self.jwks + ".tmp"
        with open(tmp, "w") as f:
            json.dump(new.jwks(), f)
        os.rename(tmp, self.jwks)
        self.node.wait_event("auth_jwks_reloaded", timeout=10)
        r = self.post(INIT, tok)
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json()["error"]["data"]["reason"], "unknown_key")
        tok_new = new.token(self.claims())
        self.tokens.append(tok_new)
        self.assertEqual(self.post(INIT, tok_new).status, 200)
        with open(self.jwks, "w") as f:
            json.dump(self.keys.jwks(), f)
        self.node.wait_event("auth_jwks_reloaded", timeout=10, count=2)
        # Nothing of any token this test made appears in the node's logs: not the token,
        # not its signature, not its payload.
        log = self.node.stderr_text()
        self.assertIn("auth_refused", log)
        self.assertGreater(len(self.tokens), 10)
        for t in self.tokens:
            head, payload, sig = t.split(".")
            for piece in (t, sig, payload):
                self.assertNotIn(piece, log)


class ConfigTest(unittest.TestCase):
    def conf(self, auth, listener="tcp_port = 0"):
        return "[metrics]\nport = 0\n[admin]\nendpoint =\n[listener]\nhttp_port = %d\n%s\n" \
               "[auth]\n%s\n" % (free_port(), listener, auth)

    def test_check_config_refuses_a_bad_auth(self):
        d = tempfile.mkdtemp(prefix="cmcp-auth-")
        self.addCleanup(subprocess.run, ["rm", "-rf", d])
        empty = os.path.join(d, "empty.json")
        with open(empty, "w") as f:
            json.dump({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, f)
        base = "enabled = true\nissuer = %s\n" % ISS
        aud = "audience = https://mcp.example.test/mcp\n"
        cases = [
            (base + "jwks_file = %s\n" % empty, "no audience"),
            (base + aud + "jwks_file = %s/none.json\n" % d, "cannot read"),
            (base + aud + "jwks_file = %s\n" % empty, "no usable signature key"),
            (base + aud + "jwks_url = http://auth.example.test/jwks\n", "not an https URL"),
            (base + aud + "jwks_url = https://a.example/jwks\njwks_file = %s\n" % empty,
             "both jwks_url and jwks_file"),
            (base + aud + "jwks_file = %s\ntool_scopes = echo\n" % empty, "NAME=SCOPE"),
        ]
        for auth, want in cases:
            code, out, err, _ = run_config_check(self.conf(auth), check=True)
            self.assertEqual(code, 2, (auth, out, err))
            self.assertIn("configuration error", err)
            self.assertIn(want, err)
        # TCP carries no token: with auth on it must stay on loopback
        keys = Keys(d, "k")
        good = os.path.join(d, "jwks.json")
        with open(good, "w") as f:
            json.dump(keys.jwks(), f)
        ok = base + aud + "jwks_file = %s\n" % good
        code, out, err, _ = run_config_check(self.conf(ok), check=True)
        self.assertEqual(code, 0, err)
        code, _, err, _ = run_config_check(
            self.conf(ok, "tcp_bind = 0.0.0.0\ntcp_port = %d" % free_port()), check=True)
        self.assertEqual(code, 2, err)
        self.assertIn("carries no token", err)
        # the environment overrides [auth] like any section
        code, _, err, _ = run_config_check(self.conf(ok), check=True,
                                           env={"CMCP_AUTH_AUDIENCE": "not-a-uri"})
        self.assertEqual(code, 2, err)
        self.assertIn("CMCP_AUTH_AUDIENCE", err)

    def test_a_scope_for_an_unknown_tool_stops_the_start(self):
        # A misspelt tool name would leave the real tool unguarded.
        d = tempfile.mkdtemp(prefix="cmcp-auth-")
        self.addCleanup(subprocess.run, ["rm", "-rf", d])
        keys = Keys(d, "k")
        jwks = os.path.join(d, "jwks.json")
        with open(jwks, "w") as f:
            json.dump(keys.jwks(), f)
        n = Node(self.conf("enabled = true\nissuer = %s\naudience = https://m.test/mcp\n"
                           "jwks_file = %s\ntool_scopes = ad=math:add\n" % (ISS, jwks)),
                 wait_ready=False)
        with n:
            code = n.wait_exit(15)
            err = n.stderr_text()
        self.assertNotEqual(code, 0)
        self.assertIn("[auth] tool_scopes names 'ad', which is no tool of this node", err)

    def test_auth_off_leaves_everything_as_it_was(self):
        http = free_port()
        with Node("[metrics]\nport = 0\n[admin]\nendpoint =\n[listener]\nhttp_port = %d\n"
                  "http_bind = 0.0.0.0\ntcp_port = 0\n" % http) as n:
            st, _, _ = http_get(http, "/.well-known/oauth-protected-resource")
            self.assertEqual(st, 404)
            c = HttpConn(http)
            self.addCleanup(c.close)
            r = c.request("POST", INIT)
            self.assertEqual(r.status, 200, r)
            self.assertNotIn("www-authenticate", r.headers)
            # one warning: MCP is served beyond loopback without authorization
            ev = n.wait_event("auth_off_on_public_address")
            self.assertEqual(len(ev), 1)
            self.assertEqual(ev[0]["http_bind"], "0.0.0.0")


if __name__ == "__main__":
    main()
