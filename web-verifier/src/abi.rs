//! The WebAssembly ABI, over the module's linear memory (all lengths in bytes):
//!
//! - `wv_alloc(len) -> ptr`: a buffer of `len` zero bytes for the caller to fill;
//! - `wv_free(ptr, len)`: gives back a buffer from `wv_alloc` or `wv_verify`;
//! - `wv_verify(bundle_ptr, bundle_len, trust_ptr, trust_len) -> ptr`: runs [`crate::verify`];
//!   the answer is a buffer of `4 + n` bytes, `n` (u32 little-endian) then `n` bytes of UTF-8
//!   JSON; the inputs stay the caller's to free;
//! - `wv_version() -> ptr`: the same framing, the crate's version;
//! - `wv_home(feed_ptr, feed_len, input_ptr, input_len) -> ptr`: [`crate::home`] (private mode);
//! - `wv_recipient_public(ptr, len) -> ptr`: [`crate::recipient_public`].
//!
//! Every pointer passed in must come from `wv_alloc` with that length; JavaScript's
//! `web/verify.js` is the one caller. Nothing here keeps state between calls.
#![allow(unsafe_code)]

use std::boxed::Box;

fn framed(text: &str) -> *mut u8 {
    let n = u32::try_from(text.len()).unwrap_or(u32::MAX) as usize;
    let mut v = Vec::with_capacity(4 + n);
    v.extend_from_slice(&(n as u32).to_le_bytes());
    v.extend_from_slice(&text.as_bytes()[..n]);
    Box::into_raw(v.into_boxed_slice()).cast::<u8>()
}

/// A zeroed buffer of `len` bytes, owned by the caller until [`wv_free`].
#[no_mangle]
pub extern "C" fn wv_alloc(len: usize) -> *mut u8 {
    Box::into_raw(vec![0u8; len].into_boxed_slice()).cast::<u8>()
}

/// Frees a buffer of `len` bytes from [`wv_alloc`] or [`wv_verify`] (4 + the framed length).
///
/// # Safety
/// `ptr` must come from `wv_alloc(len)` or be an answer of exactly `len` bytes, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn wv_free(ptr: *mut u8, len: usize) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: the caller passes back a boxed slice of exactly `len` bytes made here.
    drop(unsafe { Box::from_raw(core::ptr::slice_from_raw_parts_mut(ptr, len)) });
}

/// Verifies the bundle in `[bundle_ptr, +bundle_len)` against the pinned trust JSON in
/// `[trust_ptr, +trust_len)`; the framed JSON answer.
///
/// # Safety
/// Both ranges must be buffers from [`wv_alloc`] of at least those lengths.
#[no_mangle]
pub unsafe extern "C" fn wv_verify(
    bundle_ptr: *const u8,
    bundle_len: usize,
    trust_ptr: *const u8,
    trust_len: usize,
) -> *mut u8 {
    // SAFETY: the caller owns both buffers, of these lengths, for the call's duration.
    let (bundle, trust) = unsafe {
        (
            core::slice::from_raw_parts(bundle_ptr, bundle_len),
            core::slice::from_raw_parts(trust_ptr, trust_len),
        )
    };
    framed(&crate::verify(bundle, trust))
}

/// Verifies and decrypts the household feed page in `[feed_ptr, +feed_len)` with the input JSON
/// (`{trust, secret, state}`) in `[input_ptr, +input_len)`: [`crate::home`], framed.
///
/// # Safety
/// Both ranges must be buffers from [`wv_alloc`] of at least those lengths.
#[no_mangle]
pub unsafe extern "C" fn wv_home(
    feed_ptr: *const u8,
    feed_len: usize,
    input_ptr: *const u8,
    input_len: usize,
) -> *mut u8 {
    // SAFETY: the caller owns both buffers, of these lengths, for the call's duration.
    let (feed, input) = unsafe {
        (
            core::slice::from_raw_parts(feed_ptr, feed_len),
            core::slice::from_raw_parts(input_ptr, input_len),
        )
    };
    framed(&crate::home(feed, input))
}

/// The public key of the recipient key (hex) in `[ptr, +len)`: [`crate::recipient_public`],
/// framed.
///
/// # Safety
/// The range must be a buffer from [`wv_alloc`] of at least that length.
#[no_mangle]
pub unsafe extern "C" fn wv_recipient_public(ptr: *const u8, len: usize) -> *mut u8 {
    // SAFETY: the caller owns the buffer, of this length, for the call's duration.
    let secret = unsafe { core::slice::from_raw_parts(ptr, len) };
    framed(&crate::recipient_public(secret))
}

/// The crate's version, framed as [`wv_verify`]'s answer.
#[no_mangle]
pub extern "C" fn wv_version() -> *mut u8 {
    framed(crate::VERSION)
}

/// The randomness source of this module: none. The HPKE and AEAD crates link getrandom, but
/// verifying and opening never draw from it; a call would be a bug, and fails.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
fn no_randomness(_: &mut [u8]) -> Result<(), getrandom::Error> {
    Err(getrandom::Error::UNSUPPORTED)
}
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
getrandom::register_custom_getrandom!(no_randomness);
