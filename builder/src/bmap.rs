//! bmaptool's block map format (version 2.0): which ranges of an image hold data.
