//! SPDK methods that appear in SPDK-saved configs but tune things oxstor does not have
//! (buffer pools, socket implementations, accel engines, options of modules not yet written).
//!
//! Config replay skips them with a debug log so an SPDK config loads unchanged. A method that
//! later becomes real goes in the method table, which takes precedence over this list.

pub const IGNORED_IN_CONFIG: &[&str] = &[
    "bdev_set_options",
    "bdev_wait_for_examine",
    "bdev_nvme_set_options",
    "bdev_nvme_set_hotplug",
    "bdev_iscsi_set_options",
    "iobuf_set_options",
    "sock_set_default_impl",
    "sock_impl_set_options",
    "accel_set_options",
    "framework_set_scheduler",
    "nvmf_set_max_subsystems",
    "nvmf_set_config",
    "nvmf_set_crdt",
];

pub fn is_ignored(method: &str) -> bool {
    IGNORED_IN_CONFIG.contains(&method)
}
