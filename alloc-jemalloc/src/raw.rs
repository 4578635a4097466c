//! The one place that calls `mallctl`.
//!
//! Everything above this module is typed; here a name is a string and a value is a plain `Copy`
//! type whose size jemalloc checks. Purge, decay and tcache flush are *void* controls: jemalloc
//! rejects them when given a value to write (EPERM on `arena.<i>.purge` with a `()` write), so they
//! go through [`call`], which passes null for every argument.

use crate::error::CtlError;
use std::ffi::CString;
use std::mem::{size_of, MaybeUninit};
use std::ptr;

fn c_name(name: &str) -> Result<CString, CtlError> {
    CString::new(name).map_err(|_| CtlError::new(name, libc::EINVAL))
}

/// Reads the control `name`.
///
/// # Safety
/// `T` is the type jemalloc documents for `name` (jemalloc checks the size, not the type).
pub unsafe fn read<T: Copy>(name: &str) -> Result<T, CtlError> {
    let c = c_name(name)?;
    let mut value = MaybeUninit::<T>::uninit();
    let mut len = size_of::<T>();
    // SAFETY: `value` has room for `len` bytes; jemalloc writes exactly `len` bytes on success
    // (it fails with EINVAL when the size does not match), and the caller vouches for the type.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c.as_ptr(),
            value.as_mut_ptr().cast(),
            &mut len,
            ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return Err(CtlError::new(name, rc));
    }
    // SAFETY: mallctl succeeded, so it wrote a whole `T`.
    Ok(unsafe { value.assume_init() })
}

/// Writes `value` to the control `name`.
///
/// # Safety
/// `T` is the type jemalloc documents for `name`.
pub unsafe fn write<T: Copy>(name: &str, mut value: T) -> Result<(), CtlError> {
    let c = c_name(name)?;
    // SAFETY: `value` is a live `T` of `size_of::<T>()` bytes that jemalloc only reads.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c.as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            (&mut value as *mut T).cast(),
            size_of::<T>(),
        )
    };
    if rc != 0 {
        return Err(CtlError::new(name, rc));
    }
    Ok(())
}

/// Writes `value` to the control `name` and returns the value it replaces, in one call.
///
/// # Safety
/// `T` is the type jemalloc documents for `name`.
pub unsafe fn exchange<T: Copy>(name: &str, mut value: T) -> Result<T, CtlError> {
    let c = c_name(name)?;
    let mut old = MaybeUninit::<T>::uninit();
    let mut len = size_of::<T>();
    // SAFETY: `old` has room for `len` bytes and jemalloc writes exactly that many on success;
    // `value` is a live `T` that jemalloc only reads; the caller vouches for the type.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c.as_ptr(),
            old.as_mut_ptr().cast(),
            &mut len,
            (&mut value as *mut T).cast(),
            size_of::<T>(),
        )
    };
    if rc != 0 {
        return Err(CtlError::new(name, rc));
    }
    // SAFETY: mallctl succeeded, so it wrote a whole `T`.
    Ok(unsafe { old.assume_init() })
}

/// Runs the void control `name` (all arguments null).
pub fn call(name: &str) -> Result<(), CtlError> {
    let c = c_name(name)?;
    // SAFETY: a void control reads and writes nothing; null arguments are what jemalloc expects.
    let rc = unsafe {
        tikv_jemalloc_sys::mallctl(
            c.as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return Err(CtlError::new(name, rc));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_void_control_rejects_a_written_unit_and_accepts_a_call() {
        // The trap the typed layer avoids: purge with a `()` written is refused.
        // SAFETY: `()` has size 0; jemalloc checks sizes.
        let written = unsafe { write("arena.4096.purge", ()) };
        assert!(written.is_err());
        call("arena.4096.purge").unwrap();
    }

    #[test]
    fn unknown_names_are_enoent() {
        // SAFETY: the name does not exist, so nothing is read.
        let e = unsafe { read::<usize>("no.such.control") }.unwrap_err();
        assert_eq!(e.errno, libc::ENOENT);
        assert!(e.to_string().contains("no.such.control"));
    }
}
