//! Process limits raised at start-up.
//!
//! A node agent holds a socket per served Service port (the service proxy listens on each
//! cluster IP:port), per ingress and pod connection, and a file per open image blob; with
//! thousands of Services the usual soft limit of 1024 open files is reached long before any
//! real resource is. As Go does for every program since 1.19 (and so kubelet, kube-proxy and
//! k3s), the soft `RLIMIT_NOFILE` is raised to the hard limit. Children (runc, the container
//! shim) get the raised limit too; a container's own limits come from its OCI spec.

use rustix::process::{Resource, getrlimit, setrlimit};

/// Raises the soft open-files limit to the hard one; a failure only costs headroom, so it is
/// logged and ignored.
pub fn raise_open_files() {
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
    if let Err(error) = setrlimit(Resource::Nofile, raised) {
        tracing::debug!(%error, "could not raise the open files limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_one() {
        raise_open_files();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(limit.current, limit.maximum);
    }
}
