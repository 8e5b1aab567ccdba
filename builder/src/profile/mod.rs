//! The cluster profile: typed model, validation, hardware classes, secrets.
