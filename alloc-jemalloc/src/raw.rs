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

/// The most components a [`Mib`] holds (jemalloc's deepest names have 6).
const MIB_MAX: usize = 8;

/// A control's name translated once into jemalloc's numeric form (a MIB), so that reading and
/// writing it again neither parses a name nor allocates (what [`read()`] and [`write()`] do, to make a
/// C string). `arena.<i>.…` controls take the arena's index with [`Mib::with_index`].
///
/// ```
/// use alloc_jemalloc::raw::Mib;
/// let narenas = Mib::new(c"arenas.narenas").unwrap();
/// // SAFETY: `arenas.narenas` is an unsigned.
/// let n = unsafe { narenas.read::<u32>() }.unwrap();
/// let initialized = Mib::new(c"arena.0.initialized").unwrap();
/// // SAFETY: `arena.<i>.initialized` is a bool; arena 0 always exists.
/// assert!(unsafe { initialized.with_index(1, 0).read::<bool>() }.unwrap());
/// assert!(n >= 1);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Mib {
    parts: [usize; MIB_MAX],
    len: usize,
    /// The name it was made from, for errors (an index set later is not in it).
    name: &'static str,
}

impl Mib {
    /// Translates `name`.
    ///
    /// # Errors
    /// [`CtlError`] when jemalloc knows no such control.
    pub fn new(name: &'static std::ffi::CStr) -> Result<Mib, CtlError> {
        let text = name.to_str().unwrap_or("(not UTF-8)");
        let mut parts = [0usize; MIB_MAX];
        let mut len = MIB_MAX;
        // SAFETY: `name` is NUL-terminated; `parts` has room for `len` components, and jemalloc
        // writes at most that many, setting `len` to how many it wrote.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctlnametomib(name.as_ptr(), parts.as_mut_ptr(), &mut len)
        };
        if rc != 0 {
            return Err(CtlError::new(text, rc));
        }
        Ok(Mib {
            parts,
            len,
            name: text,
        })
    }

    /// The same control with component `at` (from 0: in `arena.<i>.purge` the `<i>` is 1) set to
    /// `index`. An `at` beyond the name's components changes nothing.
    pub fn with_index(mut self, at: usize, index: usize) -> Mib {
        if at < self.len {
            if let Some(part) = self.parts.get_mut(at) {
                *part = index;
            }
        }
        self
    }

    /// Reads the control, writing `new` in the same call if given.
    ///
    /// # Safety
    /// `T` is the type jemalloc documents for the control.
    unsafe fn call<T: Copy>(&self, new: Option<T>) -> Result<T, CtlError> {
        let mut old = MaybeUninit::<T>::uninit();
        let mut old_len = size_of::<T>();
        let mut new = new;
        let (new_ptr, new_len) = match new.as_mut() {
            Some(v) => ((v as *mut T).cast(), size_of::<T>()),
            None => (ptr::null_mut(), 0),
        };
        // SAFETY: `parts[..len]` is the MIB jemalloc made; `old` has room for `old_len` bytes
        // and jemalloc writes exactly that many on success; `new`, if any, is a live `T` it only
        // reads; the caller vouches for the type.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctlbymib(
                self.parts.as_ptr(),
                self.len,
                old.as_mut_ptr().cast(),
                &mut old_len,
                new_ptr,
                new_len,
            )
        };
        if rc != 0 {
            return Err(CtlError::new(self.name, rc));
        }
        // SAFETY: mallctlbymib succeeded, so it wrote a whole `T`.
        Ok(unsafe { old.assume_init() })
    }

    /// Reads the control.
    ///
    /// # Safety
    /// `T` is the type jemalloc documents for the control.
    ///
    /// # Errors
    /// [`CtlError`] when jemalloc refuses.
    pub unsafe fn read<T: Copy>(&self) -> Result<T, CtlError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.call(None) }
    }

    /// Writes `value` and returns the value it replaces, in one call.
    ///
    /// # Safety
    /// `T` is the type jemalloc documents for the control.
    ///
    /// # Errors
    /// [`CtlError`] when jemalloc refuses.
    pub unsafe fn exchange<T: Copy>(&self, value: T) -> Result<T, CtlError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.call(Some(value)) }
    }
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
