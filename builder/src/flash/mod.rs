//! Writing an image to a card safely: target checks, mapped-range writer, read-back verify.
