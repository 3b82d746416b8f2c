//! HTTPS for the API: certificates made by openssl for the test, a real Prometheus scraping
//! over TLS with a client certificate, curl with and without one, the plain listener next
//! to it, and a renewed certificate served after SIGHUP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use telagent_tests::agent::Agent;
use telagent_tests::poll;
use telagent_tests::prometheus::Prometheus;

const LIMIT: Duration = Duration::from_secs(30);

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA, a server certificate for 127.0.0.1 signed by it (serial `serial`), and a client
/// certificate signed by it; returns the directory.
/// A new P-256 key without a passphrase (openssl req's key options).
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
];

fn pki(dir: &Path, serial: &str) -> PathBuf {
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &EC_KEY,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=test CA",
            ],
        ]
        .concat(),
    );
    // v3 certificates with their purposes: webpki takes nothing less.
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for name in ["server", "client"] {
        openssl(
            dir,
            &[
                &["req"][..],
                &EC_KEY,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat(),
        );
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            serial,
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(["-extfile".into(), format!("{name}.ext")]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        openssl(dir, &refs);
    }
    dir.to_path_buf()
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_and_curl_over_https_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let d = pki(certs.path(), "1");
    let tls_port = telagent_tests::free_port();
    let p = |f: &str| d.join(f).display().to_string();
    let agent = Agent::start(&format!(
        "[api]\ntls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\n",
        p("server.pem"),
        p("server.key"),
        p("ca.pem")
    ))
    .await;
    let url = format!("https://127.0.0.1:{tls_port}/metrics");
    let (ok, out) = curl(&[
        "--cacert",
        &p("ca.pem"),
        "--cert",
        &p("client.pem"),
        "--key",
        &p("client.key"),
        &url,
    ]);
    assert!(ok && out.contains("telagent_build_info"), "{out}");
    let (ok, out) = curl(&["--cacert", &p("ca.pem"), &url]);
    assert!(!ok, "no client certificate, no answer: {out}");
    // The plain listener goes on beside it (peers, HAProxy's health check).
    let (code, _) = agent.get("/healthz").await.unwrap();
    assert_eq!(code, 200);

    let prom = Prometheus::start_with(
        "telagent",
        &[format!("127.0.0.1:{tls_port}")],
        &format!(
            "    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
            p("ca.pem"),
            p("client.pem"),
            p("client.key")
        ),
    )
    .await;
    poll(LIMIT, "Prometheus scraping over TLS", || async {
        prom.query("up{job=\"telagent\"}")
            .iter()
            .any(|(_, v)| *v == 1.0)
            .then_some(())
    })
    .await;
    assert!(
        !prom.query("telagent_build_info").is_empty(),
        "the agent's series arrived"
    );

    // A renewed certificate (new serial) is served after SIGHUP, without a restart.
    let serial = |()| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect 127.0.0.1:{tls_port} -CAfile {} -cert {} -key {} </dev/null 2>/dev/null | openssl x509 -noout -serial",
                p("ca.pem"), p("client.pem"), p("client.key")
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(serial(()), "serial=01");
    let renewed = tempfile::tempdir().unwrap();
    let r = pki(renewed.path(), "2");
    // Same CA for the client: copy the renewed server pair signed by the old CA.
    openssl(
        renewed.path(),
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
    std::fs::copy(r.join("server.pem"), d.join("server.pem")).unwrap();
    std::fs::copy(r.join("server.key"), d.join("server.key")).unwrap();
    agent.hup();
    poll(LIMIT, "the renewed certificate served", || async {
        (serial(()) == "serial=02").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_certificate_is_a_clear_error() {
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("server.pem"), "not a certificate\n").unwrap();
    std::fs::write(certs.path().join("server.key"), "not a key\n").unwrap();
    let cfg = certs.path().join("t.toml");
    std::fs::write(
        &cfg,
        format!(
            "[api]\ntls_listen = \"127.0.0.1:1\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            certs.path().join("server.pem").display(),
            certs.path().join("server.key").display()
        ),
    )
    .unwrap();
    let out = Command::new(telagent_tests::agent_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("server.pem") && text.contains("expected PEM"),
        "{text}"
    );
}
