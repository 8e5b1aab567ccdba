//! Writing output images: sparse/reflink copy of the base, compression.
