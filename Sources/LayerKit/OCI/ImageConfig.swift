/// An image config (image-spec `config.md`; Docker's has the same shape): the platform, the
/// runtime defaults, the layers' diffIDs and the history.
public struct ImageConfig: Codable, Sendable, Equatable {
    /// RFC 3339 time the image was made (kept as written).
    public var created: String?
    public var author: String?
    public var architecture: String?
    public var os: String?
    public var osVersion: String?
    public var osFeatures: [String]?
    public var variant: String?
    /// What a container runs by default.
    public var config: ExecutionConfig?
    public var rootfs: RootFS
    public var history: [History]?

    enum CodingKeys: String, CodingKey {
        case created, author, architecture, os, variant, config, rootfs, history
        case osVersion = "os.version"
        case osFeatures = "os.features"
    }

    public init(architecture: String?, os: String?, variant: String? = nil, config: ExecutionConfig? = nil,
                rootfs: RootFS, history: [History]? = nil, created: String? = nil) {
        self.architecture = architecture
        self.os = os
        self.variant = variant
        self.config = config
        self.rootfs = rootfs
        self.history = history
        self.created = created
    }

    /// The layers, as the diffIDs of their uncompressed tars, bottom first.
    public struct RootFS: Codable, Sendable, Equatable {
        /// Always `layers`.
        public var type: String
        public var diffIDs: [Digest]

        enum CodingKeys: String, CodingKey {
            case type
            case diffIDs = "diff_ids"
        }

        public init(type: String = "layers", diffIDs: [Digest]) {
            self.type = type
            self.diffIDs = diffIDs
        }
    }

    /// One step of the image's history.
    public struct History: Codable, Sendable, Equatable {
        public var created: String?
        public var createdBy: String?
        public var author: String?
        public var comment: String?
        /// The step made no layer.
        public var emptyLayer: Bool?

        enum CodingKeys: String, CodingKey {
            case created, author, comment
            case createdBy = "created_by"
            case emptyLayer = "empty_layer"
        }

        public init(created: String? = nil, createdBy: String? = nil, comment: String? = nil, emptyLayer: Bool? = nil) {
            self.created = created
            self.createdBy = createdBy
            self.comment = comment
            self.emptyLayer = emptyLayer
        }
    }

    /// A container's defaults (the config's `config` object; field names as the spec spells them).
    public struct ExecutionConfig: Codable, Sendable, Equatable {
        public var user: String?
        public var exposedPorts: [String: JSONValue]?
        public var env: [String]?
        public var entrypoint: [String]?
        public var cmd: [String]?
        public var volumes: [String: JSONValue]?
        public var workingDir: String?
        public var labels: [String: String]?
        public var stopSignal: String?
        public var argsEscaped: Bool?
        /// Docker's extensions, kept as they are.
        public var healthcheck: JSONValue?
        public var onBuild: [String]?
        public var shell: [String]?

        enum CodingKeys: String, CodingKey {
            case user = "User", exposedPorts = "ExposedPorts", env = "Env", entrypoint = "Entrypoint", cmd = "Cmd"
            case volumes = "Volumes", workingDir = "WorkingDir", labels = "Labels", stopSignal = "StopSignal"
            case argsEscaped = "ArgsEscaped", healthcheck = "Healthcheck", onBuild = "OnBuild", shell = "Shell"
        }

        public init() {}
    }
}

/// A JSON value whose shape LayerKit does not model (`ExposedPorts`' empty objects, Docker's
/// `Healthcheck`): decoded and encoded as it is.
public indirect enum JSONValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int64.self) { self = .integer(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValue].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let v): try container.encode(v)
        case .integer(let v): try container.encode(v)
        case .number(let v): try container.encode(v)
        case .string(let v): try container.encode(v)
        case .array(let v): try container.encode(v)
        case .object(let v): try container.encode(v)
        }
    }
}
