//! `Grip-Sig` with PEM keys (ES256, RS256) and hex secret files, checked against an independent
//! implementation: PyJWT with `cryptography` (OpenSSL) verifies the tokens tack signs, and signs
//! the tokens a trusted upstream presents. Keys are made with `openssl` at test time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use loadtest::client::RawClient;
use loadtest::origin::{Origin, OriginResponse};

use crate::grip::read_stream_until;
use crate::support::{gripcontrol_python, start, temp_file, DRIVERS};

const T: Duration = Duration::from_secs(10);

/// Runs `sh -c script` in `dir` (openssl pipelines); panics with its stderr on failure.
fn sh(dir: &Path, script: &str) {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh temp dir with test keys, as an operator would make them:
/// - `ec.pem` (PKCS#8) and `ec-pub.pem`; `ec-other.pem` (SEC1 with its EC PARAMETERS block,
///   as `openssl ecparam -genkey` writes it) and `ec-other-pub.pem`;
/// - `keys/rsa.pem` (PKCS#1 `RSA PRIVATE KEY`) and `rsa-pub.pem`; `rsa-other.pem` (PKCS#8)
///   and `rsa-other-pub.pem`;
/// - `secret.hex`, a hex HMAC secret with a trailing newline.
fn make_keys() -> PathBuf {
    let dir = temp_file("README", "test keys\n")
        .parent()
        .expect("dir")
        .to_path_buf();
    sh(
        &dir,
        "set -e; mkdir keys
         openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out ec.pem
         openssl pkey -in ec.pem -pubout -out ec-pub.pem
         openssl ecparam -name prime256v1 -genkey -out ec-other.pem
         openssl pkey -in ec-other.pem -pubout -out ec-other-pub.pem
         openssl genrsa -traditional -out keys/rsa.pem 2048 2>/dev/null
         openssl pkey -in keys/rsa.pem -pubout -out rsa-pub.pem
         openssl genrsa 2048 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out rsa-other.pem
         openssl pkey -in rsa-other.pem -pubout -out rsa-other-pub.pem
         printf '00112233445566778899aabbccddeeff\\n' > secret.hex",
    );
    let head = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .expect("key")
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(head("ec.pem"), "-----BEGIN PRIVATE KEY-----");
    assert_eq!(head("ec-other.pem"), "-----BEGIN EC PARAMETERS-----");
    assert_eq!(head("keys/rsa.pem"), "-----BEGIN RSA PRIVATE KEY-----");
    assert_eq!(head("rsa-pub.pem"), "-----BEGIN PUBLIC KEY-----");
    dir
}

/// Runs a Python snippet (PyJWT) with `args`; returns its stdout lines. Panics on failure.
fn python(script: &str, args: &[String]) -> Vec<String> {
    let out = std::process::Command::new(gripcontrol_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// PyJWT's verdict on `token`: `ok <alg> <iss> <exp>` when it verifies with `key` (a PEM file,
/// or a hex secret file for HS256) and algorithm `alg`, else `bad <error>`.
const VERIFY_PY: &str = r#"
import sys, jwt
token, key_file, alg = sys.argv[1:4]
try:
    key = open(key_file).read()
    if alg == "HS256":
        key = bytes.fromhex(key.strip())
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, key, algorithms=[alg], options={"require": ["exp"]})
    print("ok", header["alg"], claims["iss"], claims["exp"])
except Exception as e:
    print("bad", type(e).__name__)
"#;

fn pyjwt_verdict(token: &str, key_file: &Path, alg: &str) -> String {
    let lines = python(
        VERIFY_PY,
        &[
            token.to_string(),
            key_file.display().to_string(),
            alg.to_string(),
        ],
    );
    lines.join("\n")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn pem_and_hex_file_keys_sign_what_pyjwt_verifies() {
    let dir = make_keys();
    // The origin answers with the Grip-Sig it received.
    let origin = Origin::start_with(|req| {
        OriginResponse::text(200, req.header("grip-sig").unwrap_or("none"))
    });
    // Global ES256 key from pushpin.conf; per-route RS256 (key in a subdirectory, relative
    // to the routes file) and a hex secret.
    let conf = dir.join("pushpin.conf");
    std::fs::write(
        &conf,
        "[proxy]\nsig_key=file:ec.pem\nsig_iss=tack-e2e\nroutesfile=routes\n",
    )
    .expect("conf");
    let o = origin.addr();
    std::fs::write(
        dir.join("routes"),
        format!(
            "*,path_beg=/rsa/,sig_key=file:keys/rsa.pem {o}\n\
             *,path_beg=/hex/,sig_key=file:secret.hex,sig_iss=hex-iss {o}\n\
             * {o}\n"
        ),
    )
    .expect("routes");
    for (driver, _) in DRIVERS {
        let tack = start(driver, &["--config".into(), conf.display().to_string()]);
        let token_for = |path: &str| {
            let mut c = RawClient::connect(tack.addr);
            c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            let r = c.read_response(T).expect("origin answer");
            assert_eq!(r.status, 200, "{driver} {path}");
            String::from_utf8_lossy(&r.body).into_owned()
        };
        let cases = [
            ("/es", "ec-pub.pem", "ec-other-pub.pem", "ES256", "tack-e2e"),
            (
                "/rsa/x",
                "rsa-pub.pem",
                "rsa-other-pub.pem",
                "RS256",
                "tack-e2e",
            ),
            ("/hex/x", "secret.hex", "rsa-pub.pem", "HS256", "hex-iss"),
        ];
        for (path, key, other, alg, iss) in cases {
            let before = unix_now();
            let token = token_for(path);
            // Twice: the second may come from the shard's token cache; it must verify too.
            let again = token_for(path);
            for t in [&token, &again] {
                let verdict = pyjwt_verdict(t, &dir.join(key), alg);
                let fields: Vec<&str> = verdict.split(' ').collect();
                assert_eq!(
                    fields[..3],
                    ["ok", alg, iss],
                    "{driver} {path}: {verdict} for {t}"
                );
                let exp: u64 = fields[3].parse().expect("exp");
                assert!(
                    (before + 3600..=unix_now() + 3600).contains(&exp),
                    "{driver} {path}: exp {exp}"
                );
                // The verifier is not a rubber stamp: another key (for HS256, a PEM file read
                // as the wrong kind of key) refuses the token.
                let refused = pyjwt_verdict(t, &dir.join(other), alg);
                assert!(refused.starts_with("bad"), "{driver} {path}: {refused}");
            }
            if alg == "ES256" {
                // JWS ES256: 64 raw bytes r||s, base64url (86 chars), not DER.
                assert_eq!(token.rsplit('.').next().map(str::len), Some(86), "{token}");
            }
        }
    }
}

/// PyJWT mints `{"iss": "upstream", "exp": now + offset}` with a PEM private key.
const MINT_PY: &str = r#"
import sys, time, jwt
key_file, alg, offset = sys.argv[1], sys.argv[2], int(sys.argv[3])
print(jwt.encode({"iss": "upstream", "exp": int(time.time()) + offset}, open(key_file).read(), algorithm=alg))
"#;

fn pyjwt_mint(key_file: &Path, alg: &str, offset_s: i64) -> String {
    python(
        MINT_PY,
        &[
            key_file.display().to_string(),
            alg.to_string(),
            offset_s.to_string(),
        ],
    )
    .concat()
}

#[test]
fn upstream_public_key_trusts_clients_signed_by_pyjwt() {
    let dir = make_keys();
    let origin = Origin::start_with(|req| {
        OriginResponse::text(200, "for the upstream proxy")
            .with_header("Grip-Hold", "stream")
            .with_header("Grip-Channel", "up")
            .with_header(
                "X-Seen-Grip-Last",
                req.header("grip-last").unwrap_or("none"),
            )
    });
    std::fs::write(dir.join("routes"), format!("* {}\n", origin.addr())).expect("routes");
    // (upstream_key, the key PyJWT signs with, another key, algorithm)
    let cases = [
        ("ec-pub.pem", "ec.pem", "ec-other.pem", "ES256"),
        ("rsa-pub.pem", "keys/rsa.pem", "rsa-other.pem", "RS256"),
    ];
    for (upstream_key, private, other, alg) in cases {
        let conf = dir.join(format!("{alg}.conf"));
        std::fs::write(
            &conf,
            format!("[proxy]\nupstream_key=file:{upstream_key}\nsig_key=backend-key\nroutesfile=routes\n"),
        )
        .expect("conf");
        let good = pyjwt_mint(&dir.join(private), alg, 3600);
        let forged = pyjwt_mint(&dir.join(other), alg, 3600);
        let expired = pyjwt_mint(&dir.join(private), alg, -10);
        for (driver, _) in DRIVERS {
            let tack = start(driver, &["--config".into(), conf.display().to_string()]);
            let request = |token: &str| {
                let mut c = RawClient::connect(tack.addr);
                c.send(
                    format!(
                        "GET / HTTP/1.1\r\nHost: a\r\nGrip-Sig: {token}\r\nGrip-Last: up; last-id=7\r\n\r\n"
                    )
                    .as_bytes(),
                );
                c
            };
            // Trusted: the upstream gets the instruction itself, and its Grip-* headers
            // reached the origin.
            let r = request(&good)
                .read_response(T)
                .expect("passed-through instruction");
            assert_eq!(r.header("grip-hold"), Some("stream"), "{driver} {alg}");
            assert_eq!(
                r.header("x-seen-grip-last"),
                Some("up; last-id=7"),
                "{driver} {alg}"
            );
            // Signed with another key, or expired: an ordinary client, held, Grip-* stripped.
            for (what, token) in [("other key", &forged), ("expired", &expired)] {
                let mut u = request(token);
                let got = read_stream_until(&mut u, b"for the upstream proxy", T);
                let text = String::from_utf8_lossy(&got);
                assert!(
                    text.contains("X-Seen-Grip-Last: none"),
                    "{driver} {alg} {what}: {text}"
                );
                assert!(
                    !text.to_ascii_lowercase().contains("grip-hold"),
                    "{driver} {alg} {what}: {text}"
                );
            }
        }
    }
}

#[test]
fn a_bad_pem_key_is_a_config_error_naming_file_and_line() {
    let dir = make_keys();
    let conf = dir.join("bad.conf");
    // The public key cannot sign.
    std::fs::write(&conf, "[proxy]\n\nsig_key=file:ec-pub.pem\n").expect("conf");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tack"))
        .args(["--config", &conf.display().to_string()])
        .output()
        .expect("run tack");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3: sig_key = \"file:ec-pub.pem\": key file {}: line 1: a public key cannot sign",
            conf.display(),
            dir.join("ec-pub.pem").display()
        )),
        "{stderr}"
    );
}
