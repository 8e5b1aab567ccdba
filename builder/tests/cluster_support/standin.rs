//! A TLS STAND-IN of a k3s server's port 6443 on loopback. It is NOT k3s: it serves
//! the few endpoints `piimg status` and `piimg kubeconfig` read, in the real JSON
//! shapes (core/v1 NodeList, coordination/v1 Lease, `version.Info`, k3s's `/db/info`
//! `{"members": [etcdserverpb.Member]}`), with the cluster's real CA files:
//!
//! - serving certificate signed by server-ca (chain: leaf, server-ca, intermediate);
//! - client certificates verified against client-ca only; the Kubernetes paths need
//!   one whose Organization is `system:masters` (401 without, 403 otherwise);
//! - `/db/info` needs basic auth `server:<token secret>` (k3s: role k3s:server);
//! - `/version` answers anyone (Kubernetes' system:public-info-viewer).
//!
//! Addresses in [`Mode::Hang`] accept TCP and never say anything.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the stand-in cluster holds.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// core/v1 Node objects.
    pub nodes: Vec<Value>,
    /// etcd members (`/db/info`).
    pub members: Vec<Value>,
    /// kube-vip's lease holder; `None`: no lease object.
    pub lease_holder: Option<String>,
    /// The API server's version.
    pub version: String,
}

/// How one address behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serves the API.
    Serve,
    /// Accepts TCP, never answers.
    Hang,
}

/// The running stand-in.
pub struct Standin {
    /// The shared cluster state; tests change it between runs.
    pub world: Arc<Mutex<World>>,
    /// The port every address listens on.
    pub port: u16,
}

fn der_all(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .expect("PEM")
        .into_iter()
        .map(|p| p.contents().to_vec())
        .collect()
}

/// Starts listeners on every `(ip, mode)`, all on one free port, with a serving
/// certificate for all of them signed by the CA in `ca_dir`.
pub fn start(ca_dir: &std::path::Path, token: &str, addrs: &[(Ipv4Addr, Mode)]) -> Standin {
    let read = |f: &str| std::fs::read_to_string(ca_dir.join(f)).expect(f);
    // Serving certificate signed by server-ca, SANs = every address.
    let ca_key = rcgen::KeyPair::from_pem(&read("server-ca.key")).expect("server-ca key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&read("server-ca.pem"), &ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["kubernetes".to_string()]).expect("params");
    for (ip, _) in addrs {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress((*ip).into()));
    }
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "k3s");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).expect("serving cert");
    let mut chain = vec![CertificateDer::from(cert.der().to_vec())];
    for der in der_all(&read("server-ca.pem"))
        .into_iter()
        .chain(der_all(&read("intermediate-ca.pem")))
    {
        chain.push(CertificateDer::from(der));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for der in der_all(&read("client-ca.pem")) {
        roots
            .add(CertificateDer::from(der))
            .expect("client-ca root");
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .expect("verifier");
    let config = Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                chain,
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config"),
    );
    let world = Arc::new(Mutex::new(World::default()));
    let (listeners, port) = bind_all(addrs);
    for (listener, (_, mode)) in listeners.into_iter().zip(addrs) {
        let (config, world, token, mode) =
            (config.clone(), world.clone(), token.to_string(), *mode);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                if mode == Mode::Hang {
                    held.push(stream);
                    continue;
                }
                let (config, world, token) = (config.clone(), world.clone(), token.clone());
                std::thread::spawn(move || serve(stream, config, &world, &token));
            }
        });
    }
    Standin { world, port }
}

/// Binds every address on one port the kernel picks for the first.
fn bind_all(addrs: &[(Ipv4Addr, Mode)]) -> (Vec<TcpListener>, u16) {
    'retry: for _ in 0..50 {
        let first = TcpListener::bind(SocketAddr::from((addrs[0].0, 0))).expect("bind");
        let port = first.local_addr().expect("addr").port();
        let mut all = vec![first];
        for (ip, _) in &addrs[1..] {
            match TcpListener::bind(SocketAddr::from((*ip, port))) {
                Ok(l) => all.push(l),
                Err(_) => continue 'retry,
            }
        }
        return (all, port);
    }
    panic!("no common free port on {addrs:?}");
}

fn serve(stream: TcpStream, config: Arc<ServerConfig>, world: &Mutex<World>, token: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, stream);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let request = lines.next().unwrap_or_default().to_string();
    let path = request.split(' ').nth(1).unwrap_or("/").to_string();
    let auth = lines
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let orgs = client_orgs(&tls.conn);
    let (status, body) = route(&path, &auth, orgs.as_deref(), world, token);
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        _ => "Not Found",
    };
    let body = body.to_string();
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.write_all(resp.as_bytes());
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.conn.complete_io(&mut tls.sock);
}

/// The Organizations of the verified client certificate, `None` without one.
fn client_orgs(conn: &ServerConnection) -> Option<Vec<String>> {
    let der = conn.peer_certificates()?.first()?.to_vec();
    let (_, x) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(
        x.subject()
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect(),
    )
}

fn k8s_status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn route(
    path: &str,
    auth: &str,
    orgs: Option<&[String]>,
    world: &Mutex<World>,
    token: &str,
) -> (u16, Value) {
    let w = world.lock().expect("world").clone();
    if path == "/version" {
        return (
            200,
            json!({"major": "1", "minor": "31", "gitVersion": w.version,
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2024-12-13T00:00:00Z", "goVersion": "go1.22.9", "compiler": "gc",
            "platform": "linux/arm64"}),
        );
    }
    if path == "/db/info" {
        use base64::Engine;
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("server:{token}"))
        );
        if auth != want {
            return (401, json!("unauthorized"));
        }
        return (200, json!({"members": w.members}));
    }
    match orgs {
        None => return (401, k8s_status(401, "Unauthorized", "Unauthorized")),
        Some(o) if !o.iter().any(|g| g == "system:masters") => {
            return (403, k8s_status(403, "Forbidden", "forbidden"));
        }
        Some(_) => {}
    }
    if path == "/api/v1/nodes" {
        return (
            200,
            json!({"kind": "NodeList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "4242"}, "items": w.nodes}),
        );
    }
    if path == "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/plndr-cp-lock" {
        return match &w.lease_holder {
            Some(h) => (
                200,
                json!({"kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
                "metadata": {"name": "plndr-cp-lock", "namespace": "kube-system"},
                "spec": {"holderIdentity": h, "leaseDurationSeconds": 5,
                         "acquireTime": "2026-12-01T09:00:00.000000Z", "renewTime": "2026-12-01T10:00:00.000000Z",
                         "leaseTransitions": 0}}),
            ),
            None => (
                404,
                k8s_status(
                    404,
                    "NotFound",
                    "leases.coordination.k8s.io \"plndr-cp-lock\" not found",
                ),
            ),
        };
    }
    (
        404,
        k8s_status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
    )
}

/// A core/v1 Node as k3s registers it: `InternalIP` + `Hostname` addresses, the four
/// pressure conditions and `Ready`, the kubelet's node info, the `labels` its card
/// asked for; servers also get k3s's role labels and etcd annotations (`member`).
pub fn node(
    name: &str,
    ip: &str,
    version: &str,
    ready: bool,
    labels: &Value,
    member: Option<&str>,
) -> Value {
    let mut l = json!({
        "beta.kubernetes.io/arch": "arm64", "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "arm64", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "k3s",
    });
    for (k, v) in labels.as_object().into_iter().flatten() {
        l[k] = v.clone();
    }
    let mut annotations = json!({
        "alpha.kubernetes.io/provided-node-ip": ip,
        "flannel.alpha.coreos.com/backend-type": "vxlan",
        "flannel.alpha.coreos.com/public-ip": ip,
        "k3s.io/node-args": "[\"server\"]",
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    });
    if let Some(m) = member {
        for k in [
            "node-role.kubernetes.io/control-plane",
            "node-role.kubernetes.io/etcd",
            "node-role.kubernetes.io/master",
        ] {
            l[k] = json!("true");
        }
        annotations["etcd.k3s.cattle.io/node-name"] = json!(m);
        annotations["etcd.k3s.cattle.io/node-address"] = json!(ip);
    }
    let cond = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": "2026-12-01T10:00:00Z", "lastTransitionTime": "2026-12-01T09:00:00Z"})
    };
    let ready_cond = if ready {
        cond(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        )
    } else {
        cond(
            "Ready",
            "Unknown",
            "NodeStatusUnknown",
            "Kubelet stopped posting node status.",
        )
    };
    json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": name, "uid": format!("00000000-0000-4000-8000-{:012x}", name.len()),
                     "resourceVersion": "4242", "creationTimestamp": "2026-12-01T09:00:00Z",
                     "labels": l, "annotations": annotations},
        "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"], "providerID": format!("k3s://{name}")},
        "status": {
            "capacity": {"cpu": "4", "memory": "8128044Ki", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8128044Ki", "pods": "110"},
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                ready_cond,
            ],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": "0", "systemUUID": "0", "bootID": "0",
                         "kernelVersion": "6.6.62+rpt-rpi-2712", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "containerRuntimeVersion": "containerd://1.7.23-k3s2",
                         "kubeletVersion": version, "kubeProxyVersion": version,
                         "operatingSystem": "linux", "architecture": "arm64"},
            "images": []
        }
    })
}

/// An etcd member as `/db/info` lists it.
pub fn member(id: u64, name: &str, ip: &str) -> Value {
    json!({"ID": id, "name": name, "peerURLs": [format!("https://{ip}:2380")],
           "clientURLs": [format!("https://{ip}:2379")]})
}
