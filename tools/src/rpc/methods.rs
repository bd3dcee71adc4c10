//! Every RPC method the daemon knows, in one table.
//!
//! This is the only place a method name is bound to code: the socket server, `--json` config
//! replay and `rpc_get_methods` all read it. To add a method, write its handler in the file
//! for its area (`bdev.rs`, `framework.rs`, later `nvmf.rs`, `raid.rs`, `repl.rs`) and add one
//! line below. Names follow SPDK wherever SPDK has the method.

use super::{bdev, framework, nvmf, raid, repl, Handler};

/// One RPC method: its wire name and the function that serves it.
pub struct Method {
    pub name: &'static str,
    pub handler: Handler,
}

const fn m(name: &'static str, handler: Handler) -> Method {
    Method { name, handler }
}

pub const METHODS: &[Method] = &[
    // framework
    m("spdk_get_version", framework::get_version),
    m("rpc_get_methods", framework::get_methods),
    m("framework_get_reactors", framework::get_reactors),
    m("save_config", framework::save_config),
    m("spdk_kill_instance", framework::kill_instance),
    // bdev
    m("bdev_get_bdevs", bdev::get_bdevs),
    m("bdev_get_iostat", bdev::get_iostat),
    m("bdev_wait_for_examine", bdev::wait_for_examine),
    m("bdev_malloc_create", bdev::malloc_create),
    m("bdev_malloc_delete", bdev::malloc_delete),
    m("bdev_null_create", bdev::null_create),
    m("bdev_null_delete", bdev::null_delete),
    m("bdev_uring_create", bdev::uring_create),
    m("bdev_uring_delete", bdev::uring_delete),
    m("bdev_delay_create", bdev::delay_create),
    m("bdev_delay_delete", bdev::delay_delete),
    m("bdev_error_create", bdev::error_create),
    m("bdev_error_delete", bdev::error_delete),
    m("bdev_error_inject_error", bdev::error_inject_error),
    m("bdev_raid_create", raid::create),
    m("bdev_raid_delete", raid::delete),
    m("bdev_raid_get_bdevs", raid::get_bdevs),
    m("bdev_raid_add_base_bdev", raid::add_base_bdev),
    m("bdev_raid_remove_base_bdev", raid::remove_base_bdev),
    m("bdev_raid_set_options", raid::set_options),
    m("bdev_raid_scrub", raid::scrub),
    m("bdev_nvme_attach_controller", nvmf::nvme_attach_controller),
    m("bdev_nvme_detach_controller", nvmf::nvme_detach_controller),
    m("bdev_nvme_get_controllers", nvmf::nvme_get_controllers),
    // nvmf target
    m("nvmf_create_transport", nvmf::create_transport),
    m("nvmf_get_transports", nvmf::get_transports),
    m("nvmf_create_subsystem", nvmf::create_subsystem),
    m("nvmf_delete_subsystem", nvmf::delete_subsystem),
    m("nvmf_subsystem_add_ns", nvmf::subsystem_add_ns),
    m("nvmf_subsystem_remove_ns", nvmf::subsystem_remove_ns),
    m("nvmf_subsystem_add_listener", nvmf::subsystem_add_listener),
    m(
        "nvmf_subsystem_remove_listener",
        nvmf::subsystem_remove_listener,
    ),
    m("nvmf_subsystem_add_host", nvmf::subsystem_add_host),
    m("nvmf_subsystem_remove_host", nvmf::subsystem_remove_host),
    m(
        "nvmf_subsystem_allow_any_host",
        nvmf::subsystem_allow_any_host,
    ),
    m("nvmf_get_subsystems", nvmf::get_subsystems),
    m("nvmf_get_stats", nvmf::get_stats),
    // replication (drbdsetup's commands; oxadm sends them)
    m("repl_new_resource", repl::new_resource),
    m("repl_attach", repl::attach),
    m("repl_detach", repl::detach),
    m("repl_new_peer", repl::new_peer),
    m("repl_new_path", repl::new_path),
    m("repl_connect", repl::connect),
    m("repl_disconnect", repl::disconnect),
    m("repl_primary", repl::primary),
    m("repl_secondary", repl::secondary),
    m("repl_down", repl::down),
    m("repl_verify", repl::verify),
    m("repl_status", repl::status),
    m("repl_wait_sync", repl::wait_sync),
    m("repl_create_md", repl::create_md),
    m("repl_new_current_uuid", repl::new_current_uuid),
];

/// Looks a method up by its wire name.
pub fn find(name: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = METHODS.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a method is declared twice");
    }
}
