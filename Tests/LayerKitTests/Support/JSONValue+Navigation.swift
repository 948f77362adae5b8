import LayerKit

/// Reading a `JSONValue` the way the tests read an edited document: typed views that are nil when
/// the value is not of that type, so `try #require(config["rootfs"]?.object)` is as strict as a
/// cast. A document is decoded as `[String: JSONValue]` and its members edited in place.
extension JSONValue {
    var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    var array: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    var object: [String: JSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// An array of strings; nil when this is not an array or an element is not a string.
    var strings: [String]? {
        guard let array else { return nil }
        let strings = array.compactMap(\.string)
        return strings.count == array.count ? strings : nil
    }

    /// An array of objects; nil when this is not an array or an element is not an object.
    var objects: [[String: JSONValue]]? {
        guard let array else { return nil }
        let objects = array.compactMap(\.object)
        return objects.count == array.count ? objects : nil
    }
}
