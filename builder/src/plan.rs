//! Profile → one `NodePlan` per node: role, join targets, bootstrap, k3s config.
