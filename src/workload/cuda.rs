//! A real GPU for the `gpu-contention` scenario, when the machine has one: the CUDA
//! driver library is loaded at run time (no build-time dependency), each rank creates a
//! context and holds device memory, so NVML lists the job's processes on the device as
//! it would for a real model. Without a driver or a device the scenario simulates the
//! device and says so.

use std::ffi::{CStr, c_void};

type CuResult = i32;
type CuInit = unsafe extern "C" fn(u32) -> CuResult;
type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> CuResult;
type CuDeviceGet = unsafe extern "C" fn(*mut i32, i32) -> CuResult;
type CuDeviceGetName = unsafe extern "C" fn(*mut i8, i32, i32) -> CuResult;
type CuCtxCreate = unsafe extern "C" fn(*mut *mut c_void, u32, i32) -> CuResult;
type CuMemAlloc = unsafe extern "C" fn(*mut u64, usize) -> CuResult;

/// The loaded driver library; never unloaded (contexts made through it live on).
struct Driver {
    handle: *mut c_void,
}

impl Driver {
    fn open() -> Result<Driver, String> {
        // SAFETY: dlopen with a NUL-terminated name; the handle is checked.
        let handle = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW) };
        if handle.is_null() {
            return Err("no CUDA driver (libcuda.so.1 not found)".to_string());
        }
        Ok(Driver { handle })
    }

    /// Looks up `name`; `T` must be the function's exact signature.
    fn symbol<T: Copy>(&self, name: &CStr) -> Result<T, String> {
        // SAFETY: dlsym on a live handle with a NUL-terminated name; checked for null.
        let pointer = unsafe { libc::dlsym(self.handle, name.as_ptr()) };
        if pointer.is_null() {
            return Err(format!("the CUDA driver has no {}", name.to_string_lossy()));
        }
        // SAFETY: the caller names the symbol's real C signature; function pointers and
        // data pointers have the same size on the supported platforms.
        Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&pointer) })
    }

    fn check(result: CuResult, what: &str) -> Result<(), String> {
        if result == 0 {
            Ok(())
        } else {
            Err(format!("{what} failed with CUDA error {result}"))
        }
    }

    /// Initialises the driver and returns the name of device 0.
    fn first_device(&self) -> Result<(i32, String), String> {
        let init: CuInit = self.symbol(c"cuInit")?;
        let count_fn: CuDeviceGetCount = self.symbol(c"cuDeviceGetCount")?;
        let get: CuDeviceGet = self.symbol(c"cuDeviceGet")?;
        let name_fn: CuDeviceGetName = self.symbol(c"cuDeviceGetName")?;
        // SAFETY: the driver API's documented signatures, with valid out-pointers.
        unsafe {
            Self::check(init(0), "cuInit")?;
            let mut count = 0;
            Self::check(count_fn(&mut count), "cuDeviceGetCount")?;
            if count < 1 {
                return Err("the CUDA driver sees no device".to_string());
            }
            let mut device = 0;
            Self::check(get(&mut device, 0), "cuDeviceGet")?;
            let mut name = [0i8; 128];
            Self::check(name_fn(name.as_mut_ptr(), 127, device), "cuDeviceGetName")?;
            let name = CStr::from_ptr(name.as_ptr()).to_string_lossy().to_string();
            Ok((device, name))
        }
    }
}

/// Whether a real GPU can be used, and its name; or why not.
pub fn probe() -> Result<String, String> {
    Driver::open()?.first_device().map(|(_, name)| name)
}

/// Creates a context on device 0 and allocates `bytes` there, held until the process
/// exits (the driver frees them then). Returns the device's name.
pub fn hold_device_memory(bytes: usize) -> Result<String, String> {
    let driver = Driver::open()?;
    let (device, name) = driver.first_device()?;
    let create: CuCtxCreate = driver.symbol(c"cuCtxCreate_v2")?;
    let alloc: CuMemAlloc = driver.symbol(c"cuMemAlloc_v2")?;
    // SAFETY: documented driver API calls with valid out-pointers; the context and the
    // allocation live until the process exits.
    unsafe {
        let mut context: *mut c_void = std::ptr::null_mut();
        Driver::check(create(&mut context, 0, device), "cuCtxCreate")?;
        let mut pointer = 0u64;
        Driver::check(alloc(&mut pointer, bytes), "cuMemAlloc")?;
    }
    // `Driver` never unloads the library: the context must outlive this call.
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_says_why_when_there_is_no_gpu() {
        match probe() {
            Ok(name) => assert!(!name.is_empty()),
            Err(why) => assert!(why.contains("CUDA"), "{why}"),
        }
    }
}
