//! One local control plane per test binary (see tests/cluster/up).
