//! Raising the process's open file limit to what the system allows, at start: every client
//! connection holds a descriptor.

/// Most descriptors asked for when the hard limit is unlimited.
const CEILING: u64 = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (at most [`CEILING`]), as the Go runtime
/// and most servers do: the soft limit is often 1024 in a login shell or a container, which
/// would cap a broker at about a thousand clients while the system allows far more. An
/// operator's lower hard limit is respected, and the outcome is logged.
#[cfg(unix)]
pub fn raise_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(soft) = limit.current else {
        return; // Unlimited already.
    };
    let target = limit.maximum.map_or(CEILING, |hard| hard.min(CEILING));
    if soft >= target {
        return;
    }
    let raised = Rlimit {
        current: Some(target),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            from = soft,
            to = target,
            "open file limit raised (each client connection needs one)"
        ),
        Err(e) => tracing::warn!(
            soft,
            error = %e,
            "cannot raise the open file limit; at most about this many clients can connect"
        ),
    }
}

/// Nothing to raise where there is no `RLIMIT_NOFILE`.
#[cfg(not(unix))]
pub fn raise_limit() {}
