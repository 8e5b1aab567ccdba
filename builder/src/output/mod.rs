//! Writing output images: sparse/reflink copy of the base, the card written into the
//! boot partition, `.bmap`, optional `.img.xz`; every output appears atomically.

pub mod apply;
pub mod blockmap;
pub mod compress;
pub mod copy;
pub mod write;
