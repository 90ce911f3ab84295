import GatewayJSON

/// The strict JSON parser (tokens, configuration, key sets, token-endpoint bodies all go through it). What parses
/// must survive the compact writer unchanged, and the writer's output must be its own fixed point.
let jsonTarget = FuzzTarget("json", "GatewayJSON parser and writer round trip") { bytes in
    var input = FuzzInput(bytes)
    // Small limits on some inputs reach the depth and size errors without megabyte inputs.
    let selector = input.takeByte()
    let limits =
        selector & 1 == 0 ? JSONLimits(maxDepth: 32, maxBytes: 1 << 16) : JSONLimits(maxDepth: Int(selector >> 4) + 1, maxBytes: 256)
    let value: JSONValue
    do throws(JSONError) {
        value = try JSONParser.parse(input.bytes, limits: limits)
    } catch {
        // The error text is built from input bytes (JSON path of member names): it must be printable, whatever came in.
        _ = error.description
        require(error.offset >= 0 && error.offset <= input.bytes.count, "error offset \(error.offset) outside the input")
        return
    }
    let written = JSONWriter.string(value)
    let reparsed: JSONValue
    do {
        reparsed = try JSONParser.parse(written, limits: .document)
    } catch {
        require(false, "writer output does not parse: \(error) in \(written.debugBytes)")
        return
    }
    require(reparsed == value, "round trip changed the value: \(written.debugBytes)")
    require(JSONWriter.string(reparsed) == written, "writer is not a fixed point: \(written.debugBytes)")
}
