import Logging

/// How a `RegistryClient` reaches its registry.
public struct RegistryClientOptions: Sendable {
    /// Credentials for the registry (see `CredentialLookup`); nil for anonymous access.
    public var credentials: RegistryCredentials?
    /// Talk plain HTTP instead of HTTPS (`--plain-http`).
    public var plainHTTP: Bool
    /// CAs, client certificate, verification.
    public var tls: RegistryTLSSettings
    /// Retries after 429, 5xx and dropped connections.
    public var retry: RetryPolicy
    /// Times a dropped blob download is resumed with `Range` before giving up.
    public var maximumResumes: Int
    /// A connection that sends nothing for this long is dropped (and a blob download resumed).
    public var readTimeout: Duration
    /// A connection not established within this fails (and is retried per `retry`).
    public var connectTimeout: Duration
    /// Blobs larger than this are uploaded in `uploadChunkSize` chunks (POST, PATCH..., PUT);
    /// smaller ones in one PUT.
    public var monolithicUploadLimit: Int64
    /// The PATCH size for large blobs (raised to the registry's `OCI-Chunk-Min-Length`).
    public var uploadChunkSize: Int64
    /// Sent as `User-Agent`.
    public var userAgent: String
    /// Where requests and retries are logged (never a header or a secret).
    public var logger: Logger

    /// Defaults: anonymous, HTTPS with the system CAs and certs.d, 5 attempts, 5 resumes, 60 s read
    /// timeout, uploads in one PUT up to 64 MiB and in 16 MiB chunks above, no logging.
    public init(credentials: RegistryCredentials? = nil, plainHTTP: Bool = false, tls: RegistryTLSSettings = RegistryTLSSettings(),
                retry: RetryPolicy = RetryPolicy(), maximumResumes: Int = 5,
                readTimeout: Duration = .seconds(60), connectTimeout: Duration = .seconds(30),
                monolithicUploadLimit: Int64 = 64 << 20, uploadChunkSize: Int64 = 16 << 20,
                userAgent: String = "layertool", logger: Logger = Logger(label: "layerkit.registry", factory: { _ in SwiftLogNoOpLogHandler() })) {
        self.credentials = credentials
        self.plainHTTP = plainHTTP
        self.tls = tls
        self.retry = retry
        self.maximumResumes = maximumResumes
        self.readTimeout = readTimeout
        self.connectTimeout = connectTimeout
        self.monolithicUploadLimit = monolithicUploadLimit
        self.uploadChunkSize = uploadChunkSize
        self.userAgent = userAgent
        self.logger = logger
    }
}
