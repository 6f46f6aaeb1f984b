//! TLS set-up shared by every HTTP and WebSocket client.

/// Installs rustls' `ring` crypto provider as the process default. reqwest and tokio-tungstenite
/// are built without a provider of their own, and rustls panics on the first TLS handshake when
/// none is installed (tokio-tungstenite#336). Idempotent: later calls find it installed.
pub fn install_crypto_provider() {
    // An error here only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
