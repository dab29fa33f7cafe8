//! Docker's Engine API (v1.50) on a UNIX socket: `nook serve`.
//!
//! A request is read by [`http`], turned into a typed [`route::Route`] by a pure function,
//! then answered by the same library calls the CLI makes. The server is multi-threaded (a
//! thread per connection), so it never clones a container or enters a user namespace itself:
//! everything that starts, stops or changes something re-executes nook's own CLI
//! ([`reexec`]), exactly the path `nook run -d` takes, each container with its own monitor.
//! Killing the server loses nothing; a restarted one finds every container in the store.

pub mod archive;
pub mod attach;
pub mod build;
pub mod containers;
pub mod create;
pub mod df;
pub mod error;
pub mod events;
pub mod exec;
pub mod http;
pub mod images;
pub mod logs;
pub mod networks;
pub mod reexec;
pub mod relay;
pub mod route;
pub mod server;
pub mod ship;
pub mod system;
pub mod tcp;
pub mod volumes;
pub mod watch;
pub mod wire;

use std::path::PathBuf;

use error::ApiError;
use http::{Request, Response};
use route::Route;

/// What every handler works on: the store and the nook binary that does the changes.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The store directory (`--root`), passed to every re-executed nook.
    pub root: PathBuf,
    /// The nook binary to re-execute.
    pub exe: PathBuf,
    /// Read-only shared image stores (`--storage-opt additionalimagestore`, the config's),
    /// passed to every re-executed nook.
    pub shared: Vec<PathBuf>,
    /// `Mapping::describe()` of this host, for `/info`.
    pub single_id: bool,
    /// exec instances, in memory (as docker's daemon keeps them).
    pub execs: std::sync::Arc<exec::Execs>,
}

impl Engine {
    pub fn containers(&self) -> crate::container::Containers {
        crate::container::Containers::new(&self.root)
    }

    pub fn store(&self) -> Result<Option<crate::store::Store>, ApiError> {
        Ok(crate::store::Store::open_existing(&self.root)?.map(|s| s.with_shared(&self.shared)))
    }
}

/// Answers one request.
pub fn handle(engine: &Engine, req: &Request) -> Response {
    let result = route::route(&req.method, &req.path).and_then(|r| dispatch(engine, r, req));
    result.unwrap_or_else(|e| Response::error(&e))
}

fn dispatch(e: &Engine, route: Route, req: &Request) -> Result<Response, ApiError> {
    use Route as R;
    let q = &req.query;
    match route {
        R::Ping => Ok(system::ping()),
        R::Version => Ok(system::version()),
        R::Info => system::info(e),
        R::ImageList => images::list(e, q),
        R::ImageCreate => images::pull(e, q, req),
        R::ImageInspect(n) => images::inspect(e, &n),
        R::ImageHistory(n) => images::history(e, &n),
        R::ImageTag(n) => images::tag(e, &n, q),
        R::ImageDelete(n) => images::remove(e, &n, q),
        R::ContainerList => containers::list(e, q),
        R::ContainerCreate => create::create(e, q, &req.json()?),
        R::ContainerInspect(id) => containers::inspect(e, &id),
        R::ContainerStart(id) => containers::start(e, &id),
        R::ContainerStop(id) => containers::stop(e, &id, q),
        R::ContainerKill(id) => containers::kill(e, &id, q),
        R::ContainerRestart(id) => containers::restart(e, &id, q),
        R::ContainerWait(id) => logs::wait(e, &id, q),
        R::ContainerAttach(id) => attach::attach(e, &id, req),
        R::ExecCreate(id) => exec::create(e, &id, &req.json()?),
        R::ExecStart(id) => exec::start(e, &id, req),
        R::ExecResize(id) => exec::resize(e, &id, q),
        R::ExecInspect(id) => exec::inspect(e, &id),
        R::ContainerLogs(id) => logs::logs(e, &id, q),
        R::ContainerDelete(id) => containers::remove(e, &id, q),
        R::VolumeList => volumes::list(e),
        R::VolumeCreate => volumes::create(e, &req.json()?),
        R::VolumeInspect(n) => volumes::inspect(e, &n),
        R::VolumeDelete(n) => volumes::remove(e, &n, q),
        R::NetworkList => networks::list(e, q),
        R::NetworkInspect(n) => networks::inspect(e, &n),
        R::NetworkPrune => Ok(networks::prune()),
        R::NetworkChange(what) => Err(networks::unsupported(what)),
        R::SystemDf => df::df(e, q),
        R::ContainerPrune => df::prune_containers(e, q),
        R::ImagePrune => df::prune_images(e, q),
        R::VolumePrune => df::prune_volumes(e, q),
        R::Events => events::events(e, q),
        R::Build => build::build(e, req),
        R::ArchiveGet(id) => archive::get(e, &id, req),
        R::ArchivePut(id) => archive::put(e, &id, req),
        R::ImagePush(n) => ship::push(e, &n, req),
        R::ImageSave(n) => ship::save(e, n.as_deref(), q),
        R::ImageLoad => ship::load(e, req),
        R::ImageSearch => Err(ship::search()),
        R::Auth => ship::auth(e, &req.json()?),
        R::ContainerExport(id) => containers::export(e, &id),
        R::ContainerTop(id) => containers::top(e, &id, q),
        R::ContainerPause(id) => containers::pause(e, &id, true),
        R::ContainerUnpause(id) => containers::pause(e, &id, false),
        R::ContainerRename(id) => containers::rename(e, &id, q),
        R::ContainerChanges(id) => containers::changes(e, &id),
        R::ContainerResize(id) => containers::resize(e, &id, q),
        R::NotYet(what) => Err(ApiError::NotImplemented(what)),
    }
}
