//! An embedded service: the framework's [`Service`] and the HTTP server in
//! this process, as `tessera serve`, `tessera demo`, the benchmarks and the
//! tests run it.

use std::net::SocketAddr;

use tessera_framework::accounts::read_credentials;
use tessera_framework::error::Error;

use crate::client::{Client, ClientError};
use tessera_framework::service::{Service, ServiceConfig};
use tokio::sync::oneshot;

/// A running embedded service; stop it with [`Embedded::stop`].
pub struct Embedded {
    /// The service.
    pub service: Service,
    /// The address the API listens on.
    pub addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Embedded {
    /// Opens the service and starts serving the API on `listen` (port 0
    /// picks a free port).
    pub async fn start(config: ServiceConfig, listen: SocketAddr) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| Error::Invalid(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr()?;
        let mut config = config;
        if config.public_url.is_none() {
            // Agents this service starts reach it where it listens (on
            // loopback when it listens on every address).
            let host = if addr.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                addr.ip()
            };
            config.public_url = Some(format!("http://{}", SocketAddr::new(host, addr.port())));
        }
        let service = Service::open(config).await?;
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(crate::server::run(listener, service.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            service,
            addr,
            shutdown,
            server,
        })
    }

    /// The API's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of this service signing as the admin account, with the
    /// credentials the service wrote to its data folder.
    pub fn admin_client(&self) -> Result<Client, ClientError> {
        let path = self.service.admin_credentials_path();
        let (account, key) = read_credentials(&path)
            .map_err(ClientError::io(format!("reading {}", path.display())))?;
        Client::new(&self.url())?.with_credentials(&account, &key)
    }

    /// Stops the node agents it started on this machine (while it still
    /// serves them, so that they give their tasks back), stops serving
    /// (finishing requests in flight), then stops the service.
    pub async fn stop(self) -> Result<(), Error> {
        self.service
            .stop_local_agents(std::time::Duration::from_secs(20))
            .await?;
        let _ = self.shutdown.send(());
        match self.server.await {
            Ok(result) => result?,
            Err(e) => return Err(Error::Internal(format!("the HTTP server task failed: {e}"))),
        }
        self.service.shutdown().await
    }
}
