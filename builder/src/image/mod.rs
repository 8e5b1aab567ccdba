//! Disk images as data: partition tables, the FAT32 boot partition, the ext4 root (read-only).
