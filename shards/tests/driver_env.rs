//! The TACK_DRIVER override (its own test binary: it changes the process environment, so it must
//! not run beside other engine tests).

mod common;

use shards::{run, DriverKind, DriverRequest, DRIVER_ENV};

fn start(driver: DriverRequest) -> std::io::Result<DriverKind> {
    let engine = run::<u8, _, _>(common::config(1, driver, 4), |shard| async move {
        let _ = shard.driver();
    })?;
    let kind = engine.driver();
    engine.join().expect("clean exit");
    Ok(kind)
}

#[test]
fn env_overrides_config_and_rejects_unknown_values() {
    std::env::set_var(DRIVER_ENV, "bogus");
    let err = start(DriverRequest::Legacy).expect_err("unknown value");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("TACK_DRIVER"), "{err}");

    std::env::set_var(DRIVER_ENV, "legacy");
    assert_eq!(
        start(DriverRequest::IoUring).expect("starts"),
        DriverKind::Legacy
    );
    assert_eq!(
        start(DriverRequest::Auto).expect("starts"),
        DriverKind::Legacy
    );

    std::env::set_var(DRIVER_ENV, "io_uring");
    match start(DriverRequest::Legacy) {
        Ok(kind) => assert_eq!(kind, DriverKind::IoUring),
        Err(e) => {
            assert!(
                !monoio::utils::detect_uring(),
                "io_uring detected but refused: {e}"
            );
            eprintln!("io_uring unavailable here, as reported: {e}");
        }
    }

    std::env::set_var(DRIVER_ENV, "auto");
    let auto = start(DriverRequest::Legacy).expect("starts");
    let expect = if monoio::utils::detect_uring() {
        DriverKind::IoUring
    } else {
        DriverKind::Legacy
    };
    assert_eq!(auto, expect);

    std::env::remove_var(DRIVER_ENV);
    assert_eq!(
        start(DriverRequest::Legacy).expect("starts"),
        DriverKind::Legacy
    );

    // (Same test, so that it does not race with the environment changes above.)
    io_uring_request_fails_clearly_when_its_setup_is_refused();
}

fn io_uring_request_fails_clearly_when_its_setup_is_refused() {
    // Far more SQ entries than the kernel allows (32768): every io_uring setup is refused.
    if !monoio::utils::detect_uring() {
        eprintln!("io_uring unavailable: nothing to refuse");
        return;
    }
    let mut cfg = common::config(1, DriverRequest::IoUring, 4);
    cfg.uring_entries = 1 << 20;
    match run::<u8, _, _>(cfg, |_| async {}) {
        Ok(engine) => {
            let _ = engine.join();
            panic!("an impossible io_uring setup was accepted");
        }
        Err(e) => assert!(e.to_string().contains("io_uring was requested"), "{e}"),
    }
}
