import Testing
@testable import CurlNIO
