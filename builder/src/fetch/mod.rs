//! Downloading, verifying and caching the official Raspberry Pi OS Lite image.
