#!/usr/bin/env python3
"""STAND-IN for k3s in piimg's host tests. It is NOT k3s and proves nothing about k3s.

It plays, on one loopback address, the few things the first-boot agent's join
decision talks to, with the real CA files the card laid down:

  serve  --root R --ip IP --port P --cluster DIR --node NAME --role server|agent [--pidfile F]
      server: reads R/etc/rancher/k3s/config.yaml like k3s would (cluster-init /
      server / token / agent-token: the `node` user's password is agent-token, else
      the server token's), registers this node in the shared cluster state DIR/state.json
      (refusing a duplicate etcd member name, a node password that does not match,
      a token whose CA hash does not match the server's /cacerts), then serves HTTPS
      with a serving certificate signed by server-ca:
        GET  /ping                  "pong"
        GET  /cacerts               server/tls/server-ca.crt, byte for byte
        GET  /db/info               etcd members; basic auth server:<token password>
        GET  /v1-k3s/server-bootstrap  the cluster's CA files, keys included; basic
                                    auth server:<token password> only
        *    /api/v1/...            first the status codes listed in the state's
                                    "faults" (an API still starting), then:
                                    client certificates verified against client-ca;
                                    authorised by evaluating the RBAC manifests in
                                    R/var/lib/rancher/k3s/server/manifests; deleting a
                                    Node removes its etcd member shortly after (like
                                    k3s's member controller)
      agent: registers the node (token hash, the `node` user's password, node
      password) and exits.
  ready  --root R --cluster DIR --node NAME
      prints True if this node's k3s registered it (what kubectl get node shows).
"""
import argparse, base64, contextlib, fcntl, glob, hashlib, http.server, json, os
import secrets, socket, ssl, subprocess, sys, threading, time, urllib.parse

import yaml


@contextlib.contextmanager
def cluster_state(d):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "lock"), "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        p = os.path.join(d, "state.json")
        st = json.load(open(p)) if os.path.exists(p) else {
            "inits": [], "members": [], "nodes": {}, "events": [], "token_password": None,
            "agent_password": None, "tls_dir": None}
        yield st
        tmp = p + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f, indent=1)
        os.replace(tmp, p)


def event(d, text):
    with cluster_state(d) as st:
        st["events"].append(text)


def read_config(root):
    cfg = {}
    with open(os.path.join(root, "etc/rancher/k3s/config.yaml")) as f:
        for line in f:
            if line[:1] in " \t#-" or ":" not in line:
                continue
            k, v = line.split(":", 1)
            v = v.strip()
            try:
                v = json.loads(v)
            except ValueError:
                pass
            cfg[k.strip()] = v
    return cfg


def token_parts(token):
    if not token.startswith("K10"):
        return "", token
    h, creds = token[3:].split("::", 1)
    return h, creds.split(":", 1)[1]


def plain_password(token):
    """What k3s keeps of a token given to a server (passwd.EnsureUser strips K10...::user:)."""
    return token_parts(token)[1] if token else None


def pem_certs(text):
    out, cur = [], None
    for line in text.splitlines(keepends=True):
        if line.startswith("-----BEGIN CERTIFICATE-----"):
            cur = line
        elif cur is not None:
            cur += line
            if line.startswith("-----END CERTIFICATE-----"):
                out.append(cur)
                cur = None
    return out


def k3s_hash(bundle):
    """The stand-in's own (simplified) take on k3s's hashCA: several certificates ->
    sha256 of the DER of the last one (the root, in k3s-layout bundles); one ->
    sha256 of the bytes."""
    certs = pem_certs(bundle)
    if len(certs) > 1:
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(certs[-1])).hexdigest()
    return hashlib.sha256(bundle.encode()).hexdigest()


def fetch(url, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    u = urllib.parse.urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=u.hostname) as t:
            t.sendall(f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                b = t.recv(65536)
                if not b:
                    break
                data += b
    return data.split(b"\r\n\r\n", 1)[1].decode()


def refuse(a, why):
    event(a.cluster, f"refused {a.node}: {why}")
    print(f"stand-in k3s: {why}", file=sys.stderr)
    sys.exit(1)


def register(a, cfg):
    root = a.root
    tls = os.path.join(root, "var/lib/rancher/k3s/server/tls")
    etcd = os.path.join(root, "var/lib/rancher/k3s/server/db/etcd")
    pw_file = os.path.join(root, "etc/rancher/node/password")
    password = open(pw_file).read().strip() if os.path.exists(pw_file) else None
    token = cfg.get("token", "")
    want_hash, token_pw = token_parts(token)
    if a.role == "server" and os.path.isdir(etcd):
        event(a.cluster, f"restart {a.node}")
        return
    if cfg.get("cluster-init") is True:
        if not os.path.exists(os.path.join(tls, "server-ca.crt")):
            refuse(a, "no custom CA in server/tls: k3s would generate its own")
        # Bootstrap data lives in the datastore, not on a node: keep the CA files there.
        data = os.path.join(a.cluster, "bootstrap-data")
        for rel in ["server-ca.crt", "server-ca.key", "client-ca.crt", "client-ca.key"]:
            os.makedirs(data, exist_ok=True)
            with open(os.path.join(tls, rel)) as s, open(os.path.join(data, rel), "w") as d:
                d.write(s.read())
        with cluster_state(a.cluster) as st:
            st["inits"].append(a.node)
            st["events"].append(f"init {a.node}")
            st["token_password"] = token_pw
            # k3s: the `node` user's password is agent-token, else the server token's.
            st["agent_password"] = plain_password(cfg.get("agent-token")) or token_pw
            st["tls_dir"] = data
            st["members"].append({"ID": len(st["members"]) + 1, "name": f"{a.node}-{secrets.token_hex(4)}"})
            st["nodes"][a.node] = {"password": password, "role": a.role}
        os.makedirs(etcd, exist_ok=True)
        return
    server = cfg.get("server")
    if not server:
        refuse(a, "neither cluster-init nor server in config.yaml")
    with cluster_state(a.cluster) as st:
        cluster_tls = st["tls_dir"]
    cafile = os.path.join(cluster_tls, "server-ca.crt")
    try:
        fetch(server + "/ping", cafile)
        served = fetch(server + "/cacerts", cafile)
    except OSError as e:
        refuse(a, f"cannot reach {server}: {e}")
    if want_hash and k3s_hash(served) != want_hash:
        refuse(a, "token CA hash does not match the Cluster CA certificate hash")
    with cluster_state(a.cluster) as st:
        # Agents authenticate as node:<password>, servers as server:<password>.
        want_pw = st["token_password"] if a.role == "server" else st["agent_password"]
        if token_pw != want_pw:
            refuse_msg = "token password wrong"
        elif a.role == "server" and (plain_password(cfg.get("agent-token")) or token_pw) != st["agent_password"]:
            refuse_msg = "agent-token does not match the cluster's"
        elif a.role == "server" and any(m["name"].rsplit("-", 1)[0] == a.node for m in st["members"]):
            refuse_msg = "duplicate node name found, please use a unique name for this node"
        elif a.node in st["nodes"] and st["nodes"][a.node]["password"] != password:
            refuse_msg = ("Node password rejected, duplicate hostname or contents of "
                          "'/etc/rancher/node/password' may not match server node-passwd entry")
        else:
            refuse_msg = None
            known = a.node in st["nodes"]
            st["nodes"][a.node] = {"password": password, "role": a.role}
            if a.role == "server":
                st["members"].append({"ID": len(st["members"]) + 1, "name": f"{a.node}-{secrets.token_hex(4)}"})
            st["events"].append(f"join {a.node} via {server}" + (" (known node, password matches)" if known else ""))
    if refuse_msg:
        refuse(a, refuse_msg)
    if a.role == "server":
        # Bootstrap data: the joining server gets the cluster's CA files.
        for rel in ["server-ca.crt", "server-ca.key", "client-ca.crt", "client-ca.key"]:
            dst = os.path.join(tls, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if not os.path.exists(dst):
                with open(os.path.join(cluster_tls, rel)) as s, open(dst, "w") as d:
                    d.write(s.read())
        os.makedirs(etcd, exist_ok=True)


def serving_cert(tls, ip):
    crt, key = os.path.join(tls, "standin-serving.crt"), os.path.join(tls, "standin-serving.key")
    ext = os.path.join(tls, "standin-serving.ext")
    with open(ext, "w") as f:
        f.write(f"subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    run = lambda *c: subprocess.run(c, check=True, capture_output=True)
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", key, "-subj", "/CN=k3s-standin", "-out", crt + ".csr")
    run("openssl", "x509", "-req", "-in", crt + ".csr", "-CA", os.path.join(tls, "server-ca.crt"),
        "-CAkey", os.path.join(tls, "server-ca.key"), "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
        "-days", "2", "-extfile", ext, "-out", crt)
    return crt, key


def rbac_allows(root, user, verb, group, resource, name):
    docs = []
    for p in glob.glob(os.path.join(root, "var/lib/rancher/k3s/server/manifests/*.yaml")):
        docs += [d for d in yaml.safe_load_all(open(p)) if d]
    roles = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ClusterRole"}
    for b in docs:
        if b.get("kind") != "ClusterRoleBinding":
            continue
        if not any(s.get("kind") == "User" and s.get("name") == user for s in b.get("subjects", [])):
            continue
        for r in roles.get(b["roleRef"]["name"], {}).get("rules", []):
            ok = lambda lst, v: "*" in lst or v in lst
            if (ok(r.get("apiGroups", []), group) and ok(r.get("resources", []), resource)
                    and ok(r.get("verbs", []), verb)
                    and (not r.get("resourceNames") or name in r["resourceNames"])):
                return True
    return False


REGISTERED = "var/lib/rancher/k3s/standin-registered"


def mark_registered(a):
    """From now on `kubectl get node` says Ready (for a server: once it serves)."""
    with open(os.path.join(a.root, REGISTERED), "w") as f:
        f.write(a.node + "\n")


def serve(a):
    cfg = read_config(a.root)
    register(a, cfg)
    if a.role != "server":
        mark_registered(a)
        return
    tls = os.path.join(a.root, "var/lib/rancher/k3s/server/tls")
    crt, key = serving_cert(tls, a.ip)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    ctx.load_verify_locations(os.path.join(tls, "client-ca.crt"))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    cacerts = open(os.path.join(tls, "server-ca.crt"), "rb").read()
    cluster, root = a.cluster, a.root

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, code, body, ctype="text/plain"):
            b = body if isinstance(body, bytes) else body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(b)))
            self.end_headers()
            self.wfile.write(b)

        def handle_any(self, method):
            path = self.path
            if path == "/ping" and method == "GET":
                return self.reply(200, "pong")
            if path == "/cacerts" and method == "GET":
                return self.reply(200, cacerts)
            if path == "/v1-k3s/server-bootstrap" and method == "GET":
                # k3s: only the `server` user (role k3s:server) gets the bootstrap
                # data, CA keys included (pkg/server/router.go serverAuthed).
                with cluster_state(cluster) as st:
                    want = "Basic " + base64.b64encode(f"server:{st['token_password']}".encode()).decode()
                    data_dir = st["tls_dir"]
                auth = self.headers.get("Authorization", "")
                if auth != want:
                    event(cluster, "server-bootstrap refused")
                    return self.reply(401, "Unauthorized")
                body = {rel: open(os.path.join(data_dir, rel)).read()
                        for rel in ["server-ca.crt", "server-ca.key", "client-ca.crt", "client-ca.key"]}
                return self.reply(200, json.dumps(body), "application/json")
            if path == "/db/info" and method == "GET":
                with cluster_state(cluster) as st:
                    want = "Basic " + base64.b64encode(f"server:{st['token_password']}".encode()).decode()
                    members = list(st["members"])
                if self.headers.get("Authorization") != want:
                    return self.reply(401, "Unauthorized")
                return self.reply(200, json.dumps({"header": {}, "members": members}), "application/json")
            if path.startswith("/api/") or path.startswith("/apis/"):
                # Tests make the API answer like one still starting: FAULTS holds
                # status codes served, in order, before the real answer.
                with cluster_state(cluster) as st:
                    faults = st.get("faults") or []
                    code = faults.pop(0) if faults else None
                    st["faults"] = faults
                    if code:
                        st["events"].append(f"fault {code} {method} {path}")
                if code:
                    return self.reply(code, {503: "apiserver not ready", 403: "forbidden: RBAC not applied yet"}.get(code, "fault"))
                cert = self.connection.getpeercert()
                if not cert:
                    return self.reply(401, "Unauthorized")
                user = dict(x[0] for x in cert["subject"]).get("commonName")
                parts = path.split("?")[0].strip("/").split("/")
                group = "" if parts[0] == "api" else parts[1]
                rest = parts[2:] if parts[0] == "api" else parts[3:]
                if len(rest) >= 2 and rest[0] == "namespaces":
                    rest = rest[2:]
                resource = rest[0] if rest else ""
                name = rest[1] if len(rest) > 1 else ""
                verb = {"GET": "get" if name else "list", "DELETE": "delete", "PATCH": "patch",
                        "PUT": "update", "POST": "create"}[method]
                if not rbac_allows(root, user, verb, group, resource, name):
                    event(cluster, f"forbidden {user} {verb} {group}/{resource}/{name}")
                    return self.reply(403, f'{resource} "{name}" is forbidden: User "{user}" cannot {verb}')
                if group == "" and resource == "nodes" and name:
                    with cluster_state(cluster) as st:
                        exists = name in st["nodes"]
                        if exists and method == "DELETE":
                            del st["nodes"][name]
                            st["events"].append(f"delete-node {name} by {user}")
                    if not exists:
                        return self.reply(404, f'nodes "{name}" not found')
                    if method == "DELETE":
                        def drop_member():
                            time.sleep(0.5)
                            with cluster_state(cluster) as st:
                                st["members"] = [m for m in st["members"] if m["name"].rsplit("-", 1)[0] != name]
                                st["events"].append(f"member-removed {name}")
                        threading.Thread(target=drop_member).start()
                    return self.reply(200, json.dumps({"kind": "Node", "metadata": {"name": name}}), "application/json")
                return self.reply(404, "not found")
            return self.reply(404, "not found")

        def do_GET(self):
            self.handle_any("GET")

        def do_DELETE(self):
            self.handle_any("DELETE")

        def do_PATCH(self):
            self.handle_any("PATCH")

        def do_PUT(self):
            self.handle_any("PUT")

        def do_POST(self):
            self.handle_any("POST")

    class S(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self):
            sock, addr = self.socket.accept()
            sock.settimeout(5)
            try:
                return ctx.wrap_socket(sock, server_side=True), addr
            except (ssl.SSLError, OSError):
                sock.close()
                raise

        def handle_error(self, request, client_address):
            pass

    srv = S((a.ip, a.port), H)
    event(cluster, f"serving {a.node} on {a.ip}:{a.port}")
    mark_registered(a)
    srv.serve_forever()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["serve", "ready"])
    p.add_argument("--root")
    p.add_argument("--ip")
    p.add_argument("--port", type=int)
    p.add_argument("--cluster", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--role", default="server")
    p.add_argument("--pidfile")
    a = p.parse_args()
    if a.cmd == "ready":
        registered = os.path.exists(os.path.join(a.root, REGISTERED))
        with cluster_state(a.cluster) as st:
            if registered and a.node in st["nodes"]:
                print("True")
                return
        print(f'Error from server (NotFound): nodes "{a.node}" not found', file=sys.stderr)
        sys.exit(1)
    pidfile = a.pidfile or os.path.join(a.root, "run/standin-k3s.pid")
    os.makedirs(os.path.dirname(pidfile), exist_ok=True)
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    serve(a)


if __name__ == "__main__":
    main()
