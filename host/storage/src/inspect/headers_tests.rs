use super::*;

#[test]
fn a_vmdk_descriptor_is_recognised_the_way_qemu_probes_it() {
    assert!(vmdk_descriptor(
        b"# Disk DescriptorFile\nversion=1\nCID=1\n"
    ));
    assert!(vmdk_descriptor(b"\n\n  version=3\r\n"));
    assert!(!vmdk_descriptor(b"\xeb\x3c\x90mkfs.fat"));
    assert!(!vmdk_descriptor(b"#!/bin/sh\necho hi\n"));
}

#[test]
fn several_headers_in_one_file_are_all_found() {
    let mut head = vec![0u8; HEAD];
    head[..4].copy_from_slice(b"QFI\xfb");
    head[7] = 3;
    head[0x8001..0x8006].copy_from_slice(b"CD001");
    assert_eq!(magics(&head, &[]), [Magic::Qcow2, Magic::Iso]);
    head[7] = 1;
    assert_eq!(magics(&head, &[]), [Magic::Qcow1, Magic::Iso]);
    assert_eq!(magics(&[0u8; 600], b"koly"), [Magic::Dmg]);
}
