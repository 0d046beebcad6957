//! X.509 device certificates: DER and PEM parsing never panic; accepted DER is canonical.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::cert::DeviceCert;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = DeviceCert::from_der(data) {
        assert_eq!(c.der(), data);
        let _ = c.check_issued_by(&c);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = DeviceCert::from_pem(s);
    }
});
