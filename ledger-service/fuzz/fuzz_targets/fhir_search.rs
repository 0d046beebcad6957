//! The FHIR facade's search input: a query string, a `Prefer` header and a `_cursor`, all from
//! the client. Parsing never panics, whatever the bytes; a cursor that decodes re-encodes to one
//! that decodes the same.
#![no_main]
use ledger_service::fhir_search::{self as search, Params};
use ledger_service::FhirCursor as Cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (query, prefer) = text.split_once('\n').unwrap_or((&text, ""));
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(prefer) {
        headers.insert("prefer", v);
    }
    let strict = search::prefers_strict(&headers);
    if let Ok(mut p) = Params::parse(Some(query), strict) {
        let _ = search::count(&mut p);
        for name in ["date", "_lastUpdated"] {
            let _ = search::date_range(&mut p, name);
        }
        for value in p.all("patient").iter().chain(&p.all("code")) {
            let _ = search::tokens(value);
            let _ = search::reference_id("Patient", value);
        }
        for c in p.all("_cursor") {
            if let Some(cur) = Cursor::decode(&c) {
                assert_eq!(Cursor::decode(&cur.encode()), Some(cur));
            }
        }
        let _ = p.used_for_link();
        let _ = p.ignored();
    }
    let _ = search::date_span(query);
});
