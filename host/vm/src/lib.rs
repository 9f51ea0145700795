//! QEMU/QMP (being written).
