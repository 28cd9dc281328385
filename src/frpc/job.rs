//! Windows: every frpc burrow starts sits in one job object that kills its processes when the job's
//! last handle closes — burrow's exit, however it exits (Windows has no parent-death signal).
//! Nested jobs (Windows 8 on) let this work inside the job Electron puts burrow in.

use std::io;
use std::os::windows::io::RawHandle;
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation, SetInformationJobObject,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};

/// A job object handle, closed on drop.
struct Job(HANDLE);

// SAFETY: a job handle is a kernel object reference; any thread may use or close it.
#[allow(unsafe_code)]
unsafe impl Send for Job {}
#[allow(unsafe_code)]
unsafe impl Sync for Job {}

impl Drop for Job {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the handle came from CreateJobObjectW and is closed once, here.
        unsafe { CloseHandle(self.0) };
    }
}

#[allow(unsafe_code)]
fn create() -> io::Result<Job> {
    // SAFETY: null attributes and name make an anonymous job with default security.
    let handle = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
    if handle.is_null() {
        return Err(io::Error::last_os_error());
    }
    let job = Job(handle);
    // SAFETY: an all-zero JOBOBJECT_EXTENDED_LIMIT_INFORMATION is valid (no limits).
    let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
    info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    // SAFETY: `info` lives across the call, and the size given is its size.
    let ok = unsafe {
        SetInformationJobObject(
            job.0,
            JobObjectExtendedLimitInformation,
            (&info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
            std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(job)
}

/// Puts the process behind `process` into burrow's job, made on first use and held until burrow
/// exits (never closed before: its closing is what kills frpc).
#[allow(unsafe_code)]
pub fn adopt(process: RawHandle) -> io::Result<()> {
    static JOB: OnceLock<Result<Job, String>> = OnceLock::new();
    let job =
        JOB.get_or_init(|| create().map_err(|e| e.to_string())).as_ref().map_err(|e| io::Error::other(e.clone()))?;
    // SAFETY: both handles are valid for the call: the job lives in a static, and the caller
    // holds the child (and so its process handle).
    if unsafe { AssignProcessToJobObject(job.0, process as HANDLE) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
