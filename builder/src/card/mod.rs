//! The card: the files piimg lays onto a node's boot partition, rendered from overlays/.
