//! The NVMe/TCP host (initiator), exposed as a bdev module named `nvme`.
//!
//! `bdev_nvme_attach_controller` connects to a subsystem on an NVMe-oF/TCP target and makes
//! one bdev per active namespace, named `<name>n<nsid>` as SPDK does. Layers, top down:
//!
//! - [`ctrlr`]: attach / detach / get_controllers and the bdev itself. Bring-up runs on the
//!   calling control thread over the admin queue: ICReq, Fabrics Connect (queue 0, with a
//!   Keep Alive Timeout), CAP, CC.EN = 1, CSTS.RDY, Identify Controller (MDTS, IOCCSZ),
//!   Set Features Number of Queues, the active namespace list and Identify Namespace. A small
//!   thread then sends Keep Alive every KATO / 2; detach sends the shutdown notification.
//! - [`admin`]: the blocking admin connection ([`admin::Wire`]), one command at a time.
//! - [`qpair`]: the data path. Each reactor gets its own I/O queue pair (qid = reactor
//!   index + 1) when the first channel of one of the controller's bdevs is created there;
//!   it speaks NVMe/TCP on the reactor's io_uring socket with no locks, no copies of write
//!   data, reads received in place, and batched sends.
//! - [`params`]: the RPC parameters and spdk_nvme_perf's transport ID string.
//!
//! Not done yet: reconnecting a failed controller (its I/O fails with EIO and later I/O with
//! ENXIO until it is detached and attached again), I/O timeouts, multipath, TLS.

pub mod admin;
pub mod ctrlr;
pub mod params;
mod qpair;

pub use ctrlr::{attach, controller_names, detach, detach_all, get_controllers, NvmeBdev};
pub use params::{parse_transport_id, AttachParams};
